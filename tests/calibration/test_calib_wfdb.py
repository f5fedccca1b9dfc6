"""WFDB records: lead selection by name, unit conversion, resampling, windowing, targets."""

from __future__ import annotations

import numpy as np
import pytest
from calib_fixtures import ecg_meta

from medge.calibration import load_data
from medge.common.errors import DataError

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
FS, SECONDS = 250, 10


def _leads_mv(fs: int = FS, seconds: int = SECONDS) -> np.ndarray:
    """(samples, 12): lead k is a (k+1)/4 Hz sine of amplitude (k+1)/10 mV."""
    t = np.arange(fs * seconds) / fs
    return np.stack([(k + 1) / 10 * np.sin(2 * np.pi * (k + 1) / 4 * t) for k in range(12)], axis=1)


def _write(folder, name: str, signal: np.ndarray, units: list[str], names=LEADS, fs: int = FS) -> str:
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=fs, units=units, sig_name=list(names), p_signal=signal, fmt=["16"] * len(names),
                write_dir=str(folder))
    return str(folder / name)


def _load(source, meta, **kw):
    shape = (1, len(meta.preprocessing["leads"]), meta.preprocessing["samples"])
    return load_data(str(source), meta, input_name="ecg", input_shape=shape, **kw)


def test_record_is_resampled_windowed_and_leads_picked(tmp_path):
    record = _write(tmp_path, "rec1", _leads_mv(), ["mV"] * 12)
    meta = ecg_meta(rate=500, samples=1000, scale=2.0)
    ds = _load(record, meta, n=300)
    rep = ds.report
    assert rep.kind == "wfdb" and (rep.found, rep.used, rep.skipped) == (5, 5, 0)  # 10 s → five 2 s windows
    by_source = {s.source: s for s in ds.samples}
    assert set(by_source) == {f"rec1@{w * 2:g}s" for w in range(5)}
    sample = by_source["rec1@2s"]
    x = sample.feeds["ecg"]
    assert x.shape == (1, 3, 1000) and x.dtype == np.float32
    t = 2.0 + np.arange(1000) / 500
    for row, k in enumerate((1, 6, 10)):  # II, V1, V5 in model order; scale 2 on the input only
        expected = 2.0 * (k + 1) / 10 * np.sin(2 * np.pi * (k + 1) / 4 * t)
        np.testing.assert_allclose(x[0, row], expected, atol=5e-3)
    target = sample.target
    assert target.shape == (12, 1000)
    np.testing.assert_allclose(target[0], 0.1 * np.sin(2 * np.pi * 0.25 * t), atol=5e-3)
    assert ds.targets().shape == (5, 12, 1000) and rep.class_counts is None


def test_microvolt_record_and_folder_of_records(tmp_path):
    mv = _write(tmp_path / "db", "a", _leads_mv(), ["mV"] * 12)
    _write(tmp_path / "db", "b", _leads_mv() * 1000.0, ["uV"] * 12)
    _write(tmp_path / "db", "short", _leads_mv(seconds=1), ["mV"] * 12)
    _write(tmp_path / "db", "limb", _leads_mv()[:, :6], ["mV"] * 6, names=LEADS[:6])
    meta = ecg_meta(rate=500, samples=1000)
    ds = _load(tmp_path / "db", meta)
    rep = ds.report
    assert rep.used == 10 and rep.skipped == 2
    reasons = {s["item"]: s["reason"] for s in rep.skipped_items}
    assert "shorter than one model window" in reasons["short"]
    assert "no lead(s) V1, V5" in reasons["limb"]
    a = {s.source: s for s in ds.samples}["a@4s"].feeds["ecg"]
    b = {s.source: s for s in ds.samples}["b@4s"].feeds["ecg"]
    np.testing.assert_allclose(a, b, atol=2e-3)
    assert _load(mv, meta).report.used == 5


def test_wrong_lead_names_are_a_data_error(tmp_path):
    record = _write(tmp_path, "rec", _leads_mv(), ["mV"] * 12)
    with pytest.raises(DataError, match="leads II, V1, V7.*no lead\\(s\\) V7") as err:
        _load(record, ecg_meta(leads=("II", "V1", "V7"), rate=500, samples=1000))
    assert "\n" not in str(err.value)


def test_image_folder_for_an_ecg_model_is_a_data_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="no WFDB records"):
        _load(tmp_path, ecg_meta())


def test_zoo_ecg_model_reads_a_record_like_its_synthetic_data(tmp_path):
    """A 12-lead record written from synthetic data gives the generator's own 3-lead input."""
    from medge.calibration.synthetic import generate
    from medge.common.metadata import ModelMeta
    from medge.zoo import get_card

    card = get_card("ecg-3to12")
    meta = ModelMeta(model=card.name, task=card.task, labels=list(card.labels), input_layout=card.input_layout,
                     preprocessing=dict(card.preprocessing))
    inputs, twelve = generate("ecg", 1, seed=5)
    record = _write(tmp_path, "syn", twelve[0].T.astype(np.float64), ["mV"] * 12, names=card.labels, fs=500)
    ds = load_data(record, meta, input_name=card.input_name, input_shape=card.input_shape)
    sample = ds.samples[0]
    assert ds.report.used == 1 and sample.feeds[card.input_name].shape == card.input_shape
    np.testing.assert_allclose(sample.feeds[card.input_name][0], inputs[0], atol=1e-3)
    np.testing.assert_allclose(sample.target, twelve[0], atol=1e-3)
    synthetic = load_data("synthetic", meta, input_name=card.input_name, input_shape=card.input_shape, n=3)
    assert synthetic.report.synthetic_task == "ecg" and synthetic.targets().shape == (3, 12, 5000)
