"""Measure this CPU's FP32 and INT8 GEMM peak (MAC/s), the floor a model's latency is judged against.

FP32: an ONNX Runtime MatMul of 1024×1024×1024.  INT8: the same MatMul quantized to QDQ (uint8
activations, int8 weights), which ORT runs on its integer GEMM kernels (VNNI where present).
Both use the same thread count as the benchmark.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def _matmul_model(path: Path, n: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "gemm",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _time_session(path: Path, x: np.ndarray, threads: int, repeats: int) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, {"X": x})
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {"X": x})
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_peaks(threads: int, n: int = 1024, repeats: int = 10) -> dict[str, float]:
    """Return {"fp32": MAC/s, "int8": MAC/s} measured on ONNX Runtime with `threads` threads."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    x = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"X": x}])

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        _matmul_model(fp32, n)
        quantize_static(
            str(fp32), str(int8), _Reader(), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
        )
        macs = float(n) ** 3
        return {
            "fp32": macs / _time_session(fp32, x, threads, repeats),
            "int8": macs / _time_session(int8, x, threads, repeats),
        }


if __name__ == "__main__":
    peaks = gemm_peaks(threads=2)
    print({k: f"{v / 1e9:.1f} GMAC/s" for k, v in peaks.items()})
