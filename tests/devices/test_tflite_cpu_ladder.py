"""Issue #26 item 5: on a CPU LiteRT target (XNNPACK runs int16x8 slowly) the ladder prefers int8
with float fallbacks over 16-bit activations; an NPU target keeps the int16 rungs."""

from __future__ import annotations

import numpy as np
import pytest



def _sensitive_net():
    """Plain INT8 loses this net: its middle conv writes one channel spanning ±600 beside channels of
    |v| < 2 that the next conv reads (one per-tensor int8 scale rounds them to zero).  That conv is not
    next to the input, so it can go to float as well as to 16 bits."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(4, 4, 1, bias=False),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4, bias=False)).eval()
    with torch.no_grad():
        net[0].weight.abs_()
        net[2].weight.mul_(0.3)
        net[2].weight[0] = 0.0
        net[2].weight[0, 0, 1, 1] = 300.0
        net[4].weight.abs_()
        net[4].weight[:, 0] = 0.0
        net[8].weight.copy_(torch.eye(4) + 0.1)
    return net


@pytest.fixture(scope="module")
def sensitive_tflite(tmp_path_factory):
    """(float .tflite of the int8-sensitive net, calibration samples)."""
    from medge.devices.recipes.litert.convert import convert_tflite

    rng = np.random.default_rng(0)
    calib = [rng.random((1, 1, 64, 64), dtype=np.float32) for _ in range(8)]
    float_path = tmp_path_factory.mktemp("cpu-ladder") / "sensitive.fp32.tflite"
    convert_tflite(_sensitive_net(), calib[0], float_path, precision="fp32")
    return float_path, calib


def _judge(float_path, calib):
    """Passes an attempt whose output keeps a cosine >= 0.99 with the float .tflite on every sample."""
    from medge.evaluate.parity import cosine
    from medge.runtimes import open_runtime
    from medge.runtimes.base import dequantize_output, quantize_input

    def outputs(path):
        with open_runtime(path, "litert") as rt:
            i, o = rt.inputs()[0], rt.outputs()[0]
            return [dequantize_output(rt.infer({i.name: quantize_input(c, i)})[o.name], o) for c in calib]

    reference = outputs(float_path)

    def judge(path, attempt):
        attempt.passed = min(cosine(r, g) for r, g in zip(reference, outputs(path))) >= 0.99
        attempt.gate = {"kind": "parity", "passed": attempt.passed}
        return attempt

    return judge


@pytest.mark.parametrize("prefer_float", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_cpu_target_ladder_moves_ops_to_float_not_int16(sensitive_tflite, tmp_path, prefer_float):
    from medge.devices.recipes.litert.convert import tflite_ops
    from medge.devices.recipes.litert.ladder import op_precisions, run_ladder

    float_path, calib = sensitive_tflite
    out = tmp_path / "q.tflite"
    attempts = run_ladder(float_path, out, calib, _judge(float_path, calib), prefer_float=prefer_float)
    assert attempts[0].passed is False and attempts[-1].passed is True
    if prefer_float:  # int8 everywhere else, the worst ops in float, no 16-bit rung at all
        assert all(not a.int16_tensors and "to int16" not in a.action for a in attempts)
        counts = op_precisions(tflite_ops(out))
        assert attempts[-1].fp32_nodes and counts["int8"] > 0 and counts["float"] > 0 and counts["int16"] == 0
    else:  # the NPU ladder: 16-bit activations first
        assert attempts[1].int16_tensors and "to int16" in attempts[1].action
