"""The research architectures (issue 10) through every target, with the real CLI and runtimes:
INT8 under the clinical gate on ORT and OpenVINO, Jetson explicit-Q/DQ (under the same metric
gate) with a clean TensorRT preflight, and the mobile INT8 .tflite (or the exact LiteRT failure).
The MONAI entries ship no weights: parity gates only, no metric gate.

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

@pytest.mark.parametrize("name", table.MODELS + table.WEIGHTLESS)
def test_research_model_through_every_target(tmp_path, name):
    row = table.run_model(name, tmp_path, n_eval=100)
    assert not row["export_error"], row["export_error"]
    assert row["parity_max_abs"] <= 1e-4 and row["parity_batches"] == [1, 2]
    weighted = row["demo_metric"] is not None
    for backend in ("ort", "openvino"):
        gate = row[backend]
        assert not gate["error"], f"{backend}: {gate['error']}"
        if weighted:
            assert gate["passed"] is True and gate["drop"] <= table.MAX_DROP[row["metric"]], gate
    trt = row["trt"]
    assert not trt["error"] and trt["ok"] is True and trt["qdq"] > 0, trt  # explicit Q/DQ, preflight clean
    assert not row["tflite"]["error"] and row["tflite"]["coverage"] > 0, row["tflite"]
