"""`medge ecg fit`: a held-out --test set from another source, early stopping, --personalize on one patient."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.cli_checks import assert_one_line_error

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _long_record(folder, seconds: float, seed: int):
    from medge.apps.ecg.io_wfdb import write_ecg
    from medge.apps.ecg.sources import synthetic_record

    folder.mkdir(parents=True, exist_ok=True)
    rec = synthetic_record(seconds, seed)
    write_ecg(folder / "patient", rec.leads, rec.signal_mv, rec.rate_hz)
    return folder / "patient"


def test_lead_scales_weigh_small_leads_up():
    from medge.apps.ecg.fit import FitData, lead_scales

    targets = np.ones((2, 12, 100), dtype=np.float32) * np.linspace(-1, 1, 100, dtype=np.float32)
    targets[:, 4] *= 0.1  # aVL ten times smaller than the rest
    scales = lead_scales(FitData(np.zeros((2, 3, 100), np.float32), targets, ["a", "b"]))
    assert scales.shape == (12,) and scales[4] == pytest.approx(scales[0] / 10, rel=1e-5)


def _records_breaking_einthoven(folder, n: int, seed: int):
    """Records whose III is II + I, as no electrocardiograph records it (neurokit2's multileads are like that)."""
    from medge.apps.ecg.io_wfdb import write_ecg
    from medge.apps.ecg.sources import synthetic_record

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        rec = synthetic_record(10, seed + k)
        signal = rec.signal_mv.copy()
        signal[LEADS.index("III")] = signal[LEADS.index("II")] + signal[LEADS.index("I")]
        write_ecg(folder / f"bad{k:03d}", rec.leads, signal, rec.rate_hz)
    return folder


def test_einthoven_warnings_name_the_records_an_electrocardiograph_could_not_record():
    from medge.apps.ecg.fit import einthoven_warnings

    assert einthoven_warnings(0.002, None) == [] and einthoven_warnings(0.002, 0.003) == []
    [train] = einthoven_warnings(1.2, None)
    assert "training records break Einthoven" in train and "1.20 of lead II" in train and "predicted" in train
    [test] = einthoven_warnings(0.002, 1.19)
    assert "--test records break Einthoven" in test and "1.19 of lead II" in test
    assert einthoven_warnings(1.2, 1.2) == [train]  # a fit that predicts its limb leads is not told twice


def test_fit_usage_errors(run_cli, twelve_lead_records, tmp_path):
    res = run_cli("ecg", "fit", "-o", tmp_path / "f.onnx")
    assert_one_line_error(res, "pass 12-lead WFDB records", code=2)
    short = _long_record(tmp_path / "p", 30, 1)
    res = run_cli("ecg", "fit", "--personalize", short, "-o", tmp_path / "p.onnx")
    assert_one_line_error(res, "needs at least 4")
    res = run_cli("ecg", "fit", twelve_lead_records(2), "--personalize", short, "-o", tmp_path / "p.onnx")
    assert_one_line_error(res, "drop the other records", code=2)
    assert not (tmp_path / "p.onnx").exists()


@pytest.mark.slow  # ~1 min idle: two short trainings + ONNX exports
def test_fit_reports_held_out_test_records_and_personalize_gain(run_cli, twelve_lead_records, tmp_path):
    train, other = twelve_lead_records(5, seed=0), twelve_lead_records(3, seed=50)
    res = run_cli("ecg", "fit", train, "--test", other, "-o", tmp_path / "f.onnx", "--epochs", 2, "--init", "scratch",
                  report=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    t = res.report["test"]
    assert t["records"] == 3 and t["windows"] == 3
    for who in ("model", "baseline_linear"):
        assert set(t[who]["per_lead"]) == set(LEADS) and -1 <= t[who]["mean_pearson_r"] <= 1
    assert res.report["train"]["epochs_run"] <= 2 and "best_epoch" in res.report["train"]
    assert res.report["warnings"] == [] and t["einthoven_residual"] < 0.05
    broken = _records_breaking_einthoven(tmp_path / "broken", 2, 70)
    res = run_cli("ecg", "fit", train, "--test", broken, "-o", tmp_path / "b.onnx", "--epochs", 1, "--init", "scratch",
                  report=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.report["test"]["einthoven_residual"] > 0.5 and len(res.report["warnings"]) == 1
    assert "medge ecg fit: warning: the --test records break Einthoven" in res.stderr
    dup = run_cli("ecg", "fit", train, "--test", train, "-o", tmp_path / "d.onnx", "--epochs", 1)
    assert_one_line_error(dup, "also occur in the training records")

    patient = _long_record(tmp_path / "patient", 80, 7)
    res = run_cli("ecg", "fit", "--personalize", patient, "-o", tmp_path / "p.onnx", "--epochs", 3, report=True,
                  timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    assert r["fine_tune_s"] == 40 and r["held_out_s"] == 40
    held = r["held_out"]
    assert r["gain_mean_pearson_r"] == pytest.approx(held["after"]["mean_pearson_r"] - held["before"]["mean_pearson_r"])
    assert held["after"]["mean_pearson_r"] >= held["before"]["mean_pearson_r"] - 0.01  # starts at the patient's linear map
    assert (tmp_path / "p.onnx").is_file()
