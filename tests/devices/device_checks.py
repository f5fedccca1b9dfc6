"""Helpers shared by the compile-recipe tests: the CLI calls and the artifact-vs-ONNX check."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FAST_CALIB = ("--calib", "synthetic:cxr", "--option", "calib_samples=16")


def compile_cli(run_cli, model, target: str, out, *extra):
    """``medge compile MODEL --target TARGET -o OUT …`` with its JSON report."""
    return run_cli("compile", model, "--target", target, "-o", out, *extra, report=True)


def export_zoo(run_cli, name: str, path: Path) -> Path:
    """``medge export NAME -o PATH``; asserts it worked and returns PATH."""
    res = run_cli("export", name, "-o", path)
    assert res.returncode == 0, res.stderr
    return path


def artifact_vs_onnx(artifact, runtime: str, onnx_path, shape, *, channel_last: bool = False, n: int = 3, seed: int = 7):
    """(max |artifact − FP32 ONNX|, input TensorInfo, output TensorInfo) on fresh inputs.

    Inputs lie in the tiny models' normalised range; int8 I/O is (de)quantized with the artifact's
    own parameters and NHWC artifacts get NHWC inputs.
    """
    import onnxruntime as ort

    from medge.runtimes import open_runtime
    from medge.runtimes.base import dequantize_output, quantize_input

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    with open_runtime(artifact, runtime) as rt:
        i_info, o_info = rt.inputs()[0], rt.outputs()[0]
        for _ in range(n):
            x = ((rng.random(shape) - 0.5) / 0.25).astype(np.float32)
            ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            feed = np.moveaxis(x, 1, -1).copy() if channel_last else x
            got = dequantize_output(rt.infer({i_info.name: quantize_input(feed, i_info)})[o_info.name], o_info)
            worst = max(worst, float(np.abs(ref - got.reshape(ref.shape)).max()))
    return worst, i_info, o_info


PREPROCESSING = {
    "kind": "image", "modality": "CR", "channels": 1, "height": 64, "width": 64, "layout": "NCHW",
    "intensity": "unit", "window_center": None, "window_width": None, "mean": [0.5], "std": [0.25],
}
LABELS = ["atelectasis", "cardiomegaly", "effusion", "pneumothorax"]


def tiny_meta(model: str = "tiny-cxr"):
    """ModelMeta of the tiny 4-label chest X-ray CNNs built by these tests."""
    from medge.common.metadata import ModelMeta

    return ModelMeta(
        model=model, task="multilabel-classification", labels=LABELS, input_layout="NCHW",
        preprocessing=PREPROCESSING, source_sha256="0" * 64, medge_version="test", output_names=["probs"],
    )
