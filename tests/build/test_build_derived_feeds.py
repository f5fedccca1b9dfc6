"""Zoo models whose inputs are another zoo model's tensors (the SAM decoder, the Mamba step) get
their demo feeds by running that model, so their main job on an INT8 target runs end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.parametrize("model, gate_kind", [("us-lesion-sam-decoder", "metric"), ("ecg-mamba-3to12-step", "parity")])
def test_build_for_the_npu_calibrates_on_feeds_made_by_the_source_model(run_cli, tmp_path, model, gate_kind):
    out = tmp_path / "qnn"
    res = run_cli("build", model, "--target", "android-qualcomm-npu", "--runs", "4", "--warmup", "1", "-o", out,
                  report=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    assert r["ok"] is True and any("made from" in w for w in r["warnings"])
    gate = r["compile"]["gate"]
    assert gate["passed"] is True and gate["kind"] == gate_kind
    manifest = json.loads((out / "manifest.json").read_text())
    calib = manifest["calibration"]
    assert calib["source"].endswith("calib-feeds.npz") and len(calib["sha256"]) == 64
    assert manifest["extra"]["litert"]["full_integer"] is True


def test_step_feeds_carry_the_scan_state_reached_at_each_step(tmp_path):
    from medge.build.derived_feeds import write_derived_feeds

    path = write_derived_feeds("ecg-mamba-3to12-step", tmp_path / "f.npz", n=20, split="calib")
    with np.load(path) as npz:
        feeds = {k: npz[k] for k in npz.files}
    assert {k: v.shape for k, v in feeds.items()} == {"token": (20, 1, 32), "conv_state": (20, 2, 64, 3),
                                                        "ssm_state": (20, 2, 64, 8)}
    assert not feeds["ssm_state"][0].any() and feeds["ssm_state"][1].any()  # zeros at step 0 only
    assert float(np.abs(feeds["token"]).max()) > 0
    starts = np.flatnonzero(~feeds["ssm_state"].reshape(20, -1).any(axis=1))
    assert list(starts) == [0, 10]  # each ECG's first step starts from zeros, STEP_POSITIONS apart


def test_an_encoder_whose_output_is_no_mask_is_gated_on_parity_not_dice(run_cli, tmp_path):
    # the SAM encoder's (64, 8, 8) embedding holds as many values as a (1, 64, 64) lesion mask; scoring
    # it with Dice against the synthetic masks gave a number that meant nothing
    res = run_cli("build", "us-lesion-sam-encoder", "--target", "intel-cpu", "--runs", "4", "--warmup", "1",
                  "-o", tmp_path / "cpu", report=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    assert r["ok"] is True and any("do not fit" in w and "parity" in w for w in r["warnings"])
    assert r["compile"]["gate"]["kind"] == "parity"


def test_dice_refuses_outputs_that_only_hold_as_many_values_as_the_masks():
    from medge.common.errors import DataError
    from medge.evaluate.metrics import dice

    masks = np.zeros((2, 1, 64, 64), dtype=np.float32)
    assert dice(np.zeros((2, 64, 64), dtype=np.float32), masks) == 1.0  # a squeezed channel axis still fits
    with pytest.raises(DataError, match="do not fit"):
        dice(np.zeros((2, 64, 8, 8), dtype=np.float32), masks)
