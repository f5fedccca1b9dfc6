"""Architectures nobody here wrote: MONAI networks given as monai.networks.nets:NAME + kwargs."""

from __future__ import annotations

import json

import pytest

from medge.common.metadata import read_metadata

CASES = {
    "UNet-1d": ("UNet", {"spatial_dims": 1, "in_channels": 3, "out_channels": 12, "channels": [8, 16, 32],
                         "strides": [2, 2]}, "1x3x512", [12, 512]),
    "BasicUNet": ("BasicUNet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                                "features": [8, 8, 16, 32, 64, 8]}, "1x1x64x64", [2, 64, 64]),
    "SegResNet": ("SegResNet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "init_filters": 8},
                  "1x1x64x64", [2, 64, 64]),
    "DenseNet121": ("DenseNet121", {"spatial_dims": 2, "in_channels": 1, "out_channels": 3}, "1x1x64x64", [3]),
    "EfficientNetBN": ("EfficientNetBN", {"model_name": "efficientnet-b0", "spatial_dims": 2, "in_channels": 1,
                                          "num_classes": 2, "pretrained": False}, "1x1x64x64", [2]),
    "SwinUNETR": ("SwinUNETR", {"in_channels": 1, "out_channels": 2, "spatial_dims": 2, "feature_size": 12},
                  "1x1x64x64", [2, 64, 64]),
}
FAST = {"UNet-1d"}  # importing MONAI alone takes 10-20 s here; the others are slow


@pytest.mark.parametrize("case", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_monai_network_exports_with_parity(run_cli, tmp_path, case):
    net, kwargs, shape, out_shape = CASES[case]
    out = tmp_path / f"{case}.onnx"
    res = run_cli("export", f"monai.networks.nets:{net}", "-o", out, "--model-kwargs", json.dumps(kwargs),
                  "--input-shape", shape, "--dynamic-batch", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    rep = res.report
    assert rep["parity"]["passed"] and rep["parity"]["batch_sizes"] == [1, 2]
    assert rep["outputs"][0]["shape"] == ["batch", *out_shape]
    assert rep["params"] > 0 and rep["macs"] > 0 and out.stat().st_size == rep["size_bytes"]
    meta = read_metadata(out)
    assert meta.task == "unknown" and meta.labels == []
    assert meta.input_layout == {3: "NCL", 4: "NCHW"}[len(shape.split("x"))]
