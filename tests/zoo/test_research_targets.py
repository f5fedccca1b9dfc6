"""The research architectures (issue 10) through every target, with the real CLI and runtimes:
INT8 under the clinical gate on ORT and OpenVINO, Jetson explicit-Q/DQ with a clean TensorRT
preflight, and the mobile INT8 .tflite (or the exact LiteRT failure, recorded in the notes).

Each model takes minutes here (quantization with fallback, OpenVINO, LiteRT conversion), so the
whole module is slow; `scripts/research_zoo_table.py` runs the same steps and prints the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import research_zoo_table as table  # noqa: E402  (the script is the single definition of the steps)

# LiteRT conversion failures of the current tflite path (owned by the `npu` branch), see notes/byom.md
TFLITE_FAILS: dict[str, str] = {
    "us-xlstm-unet": "only refer to edge or node that has observer/fake_quant inserted",  # PT2E misses a relu
    "cxr-medvit-kan": "SOFTMAX) failed to prepare",  # int8 softmax output scale is not 1/256
    "us-lesion-sam": "Required inputs (['point']) are missing",  # the tflite path feeds one input only
}
# Gates measured to fail here (notes/byom.md): OpenVINO INT8 of the DCT attention stays above the
# 0.005 AUROC drop even with the whole DCT block in FP32 (48 eval samples; CI spans zero); OpenVINO
# INT8 of the promptable decoder loses 0.06 Dice with 45 decoder nodes (its attention) in FP32.
GATE_FAILS = {("us-dct-vit", "openvino"), ("us-lesion-sam", "openvino")}


@pytest.mark.parametrize("name", table.MODELS)
def test_research_model_through_every_target(tmp_path, name):
    row = table.run_model(name, tmp_path, n_eval=48)
    assert not row["export_error"], row["export_error"]
    assert row["parity_max_abs"] <= 1e-4
    for backend in ("ort", "openvino"):
        gate = row[backend]
        if (name, backend) in GATE_FAILS:
            assert "gate failed" in gate["error"], gate
            continue
        assert not gate["error"], f"{backend}: {gate['error']}"
        assert gate["passed"] is True and gate["drop"] <= table.MAX_DROP[row["metric"]]
    assert row["trt"]["ok"] is True, row["trt"]
    if name in TFLITE_FAILS:
        assert TFLITE_FAILS[name] in (row["tflite"]["error"] or ""), row["tflite"]
    else:
        assert not row["tflite"]["error"] and row["tflite"]["coverage"] > 0, row["tflite"]
