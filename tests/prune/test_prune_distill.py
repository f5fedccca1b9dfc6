"""Pruning recovered by distillation, gated, searched and built into bundles — through the real CLI.

The model is a user's own tiny residual CNN (``residual_models:tiny_resnet`` + safetensors whose
BatchNorm statistics match the test's unlabelled PNG folder), so every run takes seconds.  With no
labels and no task, the dense teacher labels the images and the gate metric is fidelity (R² of
the student's outputs against the teacher's).
"""

from __future__ import annotations

import json

import pytest

from fixtures.cli_checks import assert_one_line_error
from medge.common.metadata import read_sidecar

USER = ("residual_models:tiny_resnet", "--input-shape", "1x1x32x32", "--threads", "1", "--no-onnx-size",
        "--no-progress")
RECOVERED = 0.5  # fidelity the distilled student must reach and the merely pruned one misses


def _user(weights) -> tuple[str, ...]:
    return (*USER, "--weights", str(weights))


def test_distillation_recovers_what_pruning_loses_on_an_unlabelled_folder(run_cli, tmp_path, user_model,
                                                                         residual_models_on_path):
    images, weights = user_model
    bare = run_cli("prune", *_user(weights), "--sparsity", "0.6", "--eval", images, "-o", tmp_path / "bare.pt2",
                   report=True)
    assert bare.returncode == 0, bare.stderr[-2000:]
    assert bare.report["distillation"] is None
    assert bare.report["metric"]["name"] == "fidelity" and bare.report["metric"]["labels_from"] == "teacher"
    assert bare.report["metric"]["after"] < RECOVERED

    out = tmp_path / "distilled.pt2"
    res = run_cli("prune", *_user(weights), "--sparsity", "0.6", "--finetune", images, "--distill-steps", "150",
                  "-o", out, report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    assert r["metric"]["after"] >= RECOVERED > r["metric"]["after_pruning_before_distillation"]
    assert r["metric"]["before"] == pytest.approx(1.0)
    data = r["distillation"]["data"]
    assert data["kind"] == "augmented" and data["unique_samples"] >= 50 and data["samples_drawn"] >= 150 * 16 // 2
    run = r["distillation"]["runs"][0]
    assert run["loss"] == "bce-soft" and run["loss_last"] < run["loss_first"]
    assert r["macs"]["after"] < 0.5 * r["macs"]["before"] and r["distillation"]["seconds"] > 0
    pruning = read_sidecar(out).extra["pruning"]
    assert pruning["teacher_sha256"] == r["teacher_sha256"] and pruning["distillation"]["data_sha256"] == data["sha256"]
    assert pruning["metric"]["after"] == r["gate"]["pruned"]


def test_sparsity_auto_finds_a_passing_sparsity_and_refuses_an_impossible_gate(run_cli, tmp_path, user_model,
                                                                            residual_models_on_path):
    images, weights = user_model
    out = tmp_path / "auto.pt2"
    common = (*_user(weights), "--sparsity", "auto", "--finetune", images, "--distill-steps", "50",
              "--min-sparsity", "0.2", "--max-sparsity", "0.6", "--resolution", "0.2")
    res = run_cli("prune", *common, "--max-drop", "0.9", "-o", out, report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    assert r["search"] == "auto" and r["gate"]["passed"] is True and r["gate"]["drop"] <= 0.9
    tried = [p for p in r["probes"] if "gate" in p]
    assert tried[0]["sparsity"] == 0.2 and len(tried) >= 2
    for p in tried:  # every probe explains itself: widths, steps, metric with CI and n, time
        assert p["widths"] and p["distill_steps"] > 0 and p["seconds"] > 0
        assert p["gate"]["ci95"][0] <= p["gate"]["drop"] <= p["gate"]["ci95"][1] and p["gate"]["n_eval"] > 0
    assert "medge: prune auto: probe 1/3 at sparsity 0.20" in res.stderr and "ETA" in res.stderr
    assert r["settings"]["min_sparsity"] == 0.2 and r["settings"]["distill_steps"] == 50
    passing = [p["sparsity"] for p in tried if p["gate"]["passed"]]
    assert r["sparsity"] == max(passing)
    assert all(p["sparsity"] <= r["sparsity"] for p in tried if p["gate"]["passed"])
    assert read_sidecar(out).extra["pruning"]["search"] == "auto"

    never = tmp_path / "never.pt2"
    fail = run_cli("prune", *common, "--max-drop", "0", "-o", never)
    assert_one_line_error(fail, "no sparsity passes the gate", "the best probe, sparsity 0.2 after 50 distillation",
                          "95% CI", "nothing was written")
    assert "--min-sparsity" in fail.stderr or "--distill-steps" in fail.stderr
    assert not never.exists() and not list(tmp_path.glob("never.pt2*"))

    # the default range: 0.5 first; when it fails, halved down to 0.25 before giving up
    default = run_cli("prune", *_user(weights), "--sparsity", "auto", "--finetune", images, "--distill-steps", "50",
                      "--max-drop", "0", "-o", never)
    assert_one_line_error(default, "no sparsity passes the gate", "nothing was written")
    assert "probe 1/4 at sparsity 0.50" in default.stderr
    assert "sparsity 0.50 fails; stepping down to 0.25" in default.stderr and "probe 2/5 at sparsity 0.25" in default.stderr
    assert not never.exists()


def test_build_with_prune_writes_a_bundle_whose_manifest_records_the_pruning(run_cli, tmp_path, user_model,
                                                                           residual_models_on_path):
    images, weights = user_model
    bundle = tmp_path / "bundle"
    res = run_cli("build", "residual_models:tiny_resnet", "--weights", weights, "--input-shape", "1x1x32x32",
                  "--target", "intel-cpu", "--prune", "0.5", "--prune-data", images, "--calib", images,
                  "--max-drop", "5",  # the manifest is under test, not the quality
                  "--distill-steps", "60", "--threads", "1", "--runs", "4", "--warmup", "1",
                  "-o", bundle, report=True)
    assert res.returncode == 0, res.stderr[-3000:]
    r = res.report
    assert [s["step"] for s in r["steps"]][:2] == ["prune+distil", "export"]
    pruning = r["pruning"]
    assert pruning["sparsity"] == 0.5 and pruning["round_to"] == 16  # intel-cpu: oneDNN blocks of 16
    rows = pruning["rows"]
    assert r["precision"] == "int8"  # --prune without --precision on an INT8 target: the pruned+INT8 bundle
    assert set(rows) == {"dense", "pruned", "pruned+int8"}
    assert rows["pruned"]["macs"] < rows["dense"]["macs"]
    # the report says by how much the MACs fell (the ratio, not the timing, is under test)
    mac_ratio = rows["pruned"]["macs"] / rows["dense"]["macs"]
    assert any(n.startswith("MACs") and f"{mac_ratio:.2f}x" in n for n in pruning["notes"]), pruning["notes"]
    assert all(row["latency_ms"] > 0 for row in rows.values())
    assert rows["pruned"]["size_bytes"] < rows["dense"]["size_bytes"]
    assert pruning["notes"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    record = manifest["model_meta"]["extra"]["pruning"]
    assert record["sparsity"] == 0.5 and record["teacher_sha256"] == pruning["teacher_sha256"]
    assert len(record["distillation"]["data_sha256"]) == 64
    assert record["metric"]["before"] == pytest.approx(1.0) and record["metric"]["after"] == rows["pruned"]["metric"]
    assert record["round_to"] == 16


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--sparsity", "auto"], 2, "--sparsity auto needs --finetune"),
        (["--sparsity", "lots"], 2, "--sparsity must be a number"),
        (["--sparsity", "auto", "--mode", "unstructured", "--finetune", "synthetic:us-frame"], 2, "needs --mode structured"),
        (["--finetune", "synthetic:us-frame", "--distill-steps", "0"], 2, "--distill-steps must be >= 1"),
        (["--finetune", "synthetic:us-frame", "--task-weight", "1.5"], 2, "--task-weight must be in [0, 1]"),
        (["--finetune", "synthetic:us-frame", "--ema", "1"], 2, "--ema must be in [0, 1)"),
        (["--prune-steps", "3"], 2, "--prune-steps > 1 distils"),
        (["--max-drop", "0.01"], 2, "--max-drop needs --eval"),
    ],
)
def test_bad_distillation_requests_are_one_line_errors(run_cli, tmp_path, args, code, words):
    res = run_cli("prune", "us-frame-screen", "-o", tmp_path / "x.pt2", *args)
    assert_one_line_error(res, words, code=code)
    assert not (tmp_path / "x.pt2").exists()


def test_build_prune_flags_need_prune(run_cli, tmp_path):
    res = run_cli("build", "us-frame-screen", "--prune-data", "synthetic:us-frame", "-o", tmp_path / "b")
    assert res.returncode == 2 and "need --prune" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("build", "us-frame-screen", "--distill-task-weight", "1", "-o", tmp_path / "b")
    assert res.returncode == 2 and "need --prune" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("build", "us-frame-screen", "--prune", "0.99", "-o", tmp_path / "b")
    assert res.returncode == 2 and "--prune sparsity must be in" in res.stderr


def test_an_encoder_whose_output_is_no_mask_is_gated_on_fidelity(run_cli, tmp_path):
    """us-lesion-sam-encoder's (64, 8, 8) embedding is no (64, 64) lesion mask: the synthetic masks do not fit
    it, so the gate is the R² against the dense encoder (not Dice of an embedding, not a shape error), and no
    task loss on the masks enters the distillation."""
    out = tmp_path / "encoder.pt2"
    res = run_cli("prune", "us-lesion-sam-encoder", "--sparsity", "0.3", "--finetune", "synthetic",
                  "--distill-steps", "30", "--eval-samples", "64", "--select-samples", "32", "--max-drop", "0.9",
                  "--threads", "1", "--no-onnx-size", "--no-progress", "-o", out, report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    assert r["gate"]["name"] == "fidelity" and r["gate"]["labels_from"] == "teacher" and r["gate"]["passed"]
    assert r["metric"]["after"] > r["metric"]["after_pruning_before_distillation"]
    assert any("do not fit" in n and "fidelity" in n for n in r["notes"])
    assert r["distillation"]["runs"][0]["loss"] == "mse" and out.exists()  # no "+task": the masks stay out


@pytest.mark.slow
# The ECG net's linear lead transform carries most of its accuracy, so pruning its TCN costs little
# (0.022 of Pearson r at 0.5, 0.025 at 0.7): it is pruned harder and needs a smaller loss to be a test.
@pytest.mark.parametrize(("model", "sparsity", "min_loss"), [("us-frame-screen", "0.5", 0.05), ("ecg-3to12", "0.7", 0.015)])
def test_distillation_recovers_zoo_models_on_synthetic_data(run_cli, tmp_path, model, sparsity, min_loss):
    """Zoo demo weights: distillation on fresh synthetic data wins back most of what pruning costs."""
    res = run_cli("prune", model, "--sparsity", sparsity, "--finetune", "synthetic", "--distill-steps", "80",
                  "--eval-samples", "64", "--threads", "1", "--no-onnx-size", "-o", tmp_path / "z.pt2", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    metric = res.report["metric"]
    lost = metric["before"] - metric["after_pruning_before_distillation"]
    assert lost > min_loss  # pruning cost something, so the recovery below means something
    assert metric["after"] >= metric["after_pruning_before_distillation"] + 0.5 * lost
    assert res.report["distillation"]["data"]["kind"] == "synthetic"
    assert res.report["distillation"]["runs"][0]["loss"].endswith("+task")


@pytest.mark.slow
def test_same_seed_gives_the_same_pruned_model(run_cli, tmp_path, user_model, residual_models_on_path):
    images, weights = user_model
    shas = []
    for name in ("a.pt2", "b.pt2"):
        res = run_cli("prune", *_user(weights), "--sparsity", "0.5", "--finetune", images, "--distill-steps", "30",
                      "--prune-steps", "2", "--seed", "3", "-o", tmp_path / name, report=True)
        assert res.returncode == 0, res.stderr[-2000:]
        assert len(res.report["distillation"]["runs"]) == 2
        shas.append((res.report["weights_sha256"], res.report["gate"]))
    assert shas[0] == shas[1]


def test_weight_average_blends_weights_and_statistics_and_copies_counters():
    import torch
    from torch import nn

    from medge.prune.distill import WeightAverage

    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    average = WeightAverage(net, decay=0.9)
    before = average.module[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.add_(2.0)
        net[1].num_batches_tracked += 5
    average.update(net, step=1000)  # past the warm-up: the decay itself
    torch.testing.assert_close(average.module[0].weight, 0.9 * before + 0.1 * net[0].weight)
    torch.testing.assert_close(average.module[1].running_mean, torch.full((2,), 0.2))
    assert int(average.module[1].num_batches_tracked) == 5
    average.update(net, step=0)  # warm-up: the first steps mostly take the new weights
    assert float((average.module[0].weight - net[0].weight).abs().max()) < 0.1


def test_auto_skips_a_sparsity_whose_widths_an_earlier_probe_reached(run_cli, tmp_path, user_model,
                                                                     residual_models_on_path):
    """With channels rounded to 8, sparsities 0.4 and 0.6 give tiny_resnet the same widths: one probe."""
    images, weights = user_model
    res = run_cli("prune", *_user(weights), "--sparsity", "auto", "--finetune", images, "--distill-steps", "20",
                  "--min-sparsity", "0.4", "--max-sparsity", "0.6", "--round-to", "8", "--max-drop", "100",
                  "-o", tmp_path / "s.pt2", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    probes = [p for p in res.report["probes"] if "sparsity" in p]
    assert [p["sparsity"] for p in probes] == [0.4, 0.6]
    assert "gate" in probes[0] and probes[1]["skipped"] == "same widths as sparsity 0.4"
    assert probes[1]["widths"] == probes[0]["widths"] and probes[1]["passed"] is True
    assert "sparsity 0.60 skipped: same widths as 0.40" in res.stderr
