"""PyTorch vs ONNX Runtime (FP32, CPUExecutionProvider) parity on seeded and real inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medge.errors import DataError, ExportError
from medge.export.report import OutputParity, ParityResult

MAX_SAMPLES = 16


def load_samples(path: str | Path, input_name: str, input_shape: tuple[int, ...]) -> np.ndarray:
    """Model-ready samples from .npy/.npz as float32 of shape (N, *input_shape[1:])."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"samples file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for bad files
        raise DataError(f"cannot read samples {path}: {exc}; give a .npy or .npz array") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        keys = list(data.files)
        key = input_name if input_name in keys else ("inputs" if "inputs" in keys else keys[0] if keys else None)
        if key is None:
            raise DataError(f"samples file {path} is empty")
        arr = data[key]
    else:
        arr = data
    per_sample = tuple(input_shape[1:])
    if arr.shape == per_sample:
        arr = arr[None]
    if tuple(arr.shape[1:]) != per_sample:
        raise DataError(
            f"samples in {path} have shape {tuple(arr.shape)}; expected (N, {', '.join(map(str, per_sample))}) "
            "of model-ready (normalised) inputs"
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"samples in {path} have dtype {arr.dtype}; expected numbers")
    return np.ascontiguousarray(arr[:MAX_SAMPLES], dtype=np.float32)


def _ort_session(onnx_bytes: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise ExportError(f"ONNX Runtime cannot load the exported model: {str(exc)[:300]}") from None


def _torch_outputs(module, x: np.ndarray, what: str) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        try:
            out = module(torch.from_numpy(x))
        except Exception as exc:  # noqa: BLE001 - model code raised
            raise ExportError(f"PyTorch model fails on {what} (shape {list(x.shape)}): {str(exc)[:200]}") from None
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    return [o.detach().float().cpu().numpy() for o in outs]


def _errors(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> tuple[float, float, bool]:
    if ref.shape != got.shape:
        return float("inf"), float("inf"), False
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    nan_mismatch = np.isnan(ref64) != np.isnan(got64)
    if nan_mismatch.any():
        return float("inf"), float("inf"), False
    diff = np.abs(np.nan_to_num(ref64 - got64, nan=0.0))
    rel = diff / np.maximum(np.abs(np.nan_to_num(ref64)), max(atol, 1e-12))
    passed = bool(np.isclose(got64, ref64, atol=atol, rtol=rtol, equal_nan=True).all())
    return float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), passed


def check_parity(
    module: Any,
    onnx_bytes: bytes,
    *,
    input_name: str,
    output_names: list[str],
    input_shape: tuple[int, ...],
    batch_sizes: list[int],
    samples: np.ndarray | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    n_random: int = 3,
    seed: int = 0,
) -> ParityResult:
    """Compare PyTorch and ONNX Runtime outputs; pass when every element is within atol + rtol·|ref|."""
    session = _ort_session(onnx_bytes)
    cases: list[tuple[str, np.ndarray]] = []
    for batch in batch_sizes:
        for i in range(n_random):
            rng = np.random.default_rng([seed, batch, i])
            x = rng.standard_normal((batch, *input_shape[1:]), dtype=np.float32)
            cases.append((f"random seed {i}, batch {batch}", x))
    n_samples = 0 if samples is None else len(samples)
    for i in range(n_samples):
        cases.append((f"sample {i}", samples[i : i + 1]))
    worst: dict[str, OutputParity] = {n: OutputParity(n, 0.0, 0.0, True, "") for n in output_names}
    for what, x in cases:
        ref = _torch_outputs(module, x, what)
        try:
            got = session.run(output_names, {input_name: x})
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise ExportError(f"ONNX Runtime fails on {what} (shape {list(x.shape)}): {str(exc)[:200]}") from None
        if len(ref) != len(got):
            raise ExportError(f"PyTorch returns {len(ref)} outputs but the ONNX model {len(got)}")
        for name, r, g in zip(output_names, ref, got):
            abs_err, rel_err, passed = _errors(r, g, atol, rtol)
            entry = worst[name]
            if abs_err >= entry.max_abs_error or (entry.passed and not passed):
                entry.max_abs_error, entry.worst_input = abs_err, what
            entry.max_rel_error = max(entry.max_rel_error, rel_err)
            entry.passed = entry.passed and passed
    outputs = list(worst.values())
    return ParityResult(
        max_abs_error=max(o.max_abs_error for o in outputs),
        max_rel_error=max(o.max_rel_error for o in outputs),
        tolerance={"atol": atol, "rtol": rtol},
        passed=all(o.passed for o in outputs),
        batch_sizes=list(batch_sizes),
        n_random=n_random,
        n_samples=n_samples,
        outputs=outputs,
    )
