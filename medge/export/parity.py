"""PyTorch vs ONNX Runtime (FP32, CPUExecutionProvider) parity on seeded and real inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medge.common.errors import DataError, ExportError
from medge.evaluate.parity import compare_outputs
from medge.export.report import OutputParity, ParityResult
from medge.runtimes.ort import ort_session

MAX_SAMPLES = 16


def load_samples(path: str | Path, specs: list) -> list[dict[str, np.ndarray]]:
    """Model-ready samples from .npy/.npz: a list of feeds ``{input name: (1, ...) array}``.

    A single-input model takes an .npy, or an .npz with the input's name (or ``inputs``, or its
    only array); a multi-input model takes an .npz with one array per input name.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"samples file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for bad files
        raise DataError(f"cannot read samples {path}: {exc}; give a .npy or .npz array") from None
    arrays: dict[str, np.ndarray] = {}
    if isinstance(data, np.lib.npyio.NpzFile):
        keys = list(data.files)
        if not keys:
            raise DataError(f"samples file {path} is empty")
        if len(specs) == 1:
            name = specs[0].name
            key = name if name in keys else ("inputs" if "inputs" in keys else keys[0])
            arrays[name] = data[key]
        else:
            missing = [s.name for s in specs if s.name not in keys]
            if missing:
                raise DataError(f"samples {path.name} lack array(s) {', '.join(missing)}; a multi-input model needs "
                                f"one array per input name ({', '.join(s.name for s in specs)})")
            arrays = {s.name: data[s.name] for s in specs}
    else:
        if len(specs) > 1:
            raise DataError(f"a multi-input model needs an .npz with one array per input name "
                            f"({', '.join(s.name for s in specs)}), not {path.name}")
        arrays[specs[0].name] = data
    counts = set()
    for spec in specs:
        arr = arrays[spec.name]
        per_sample = tuple(spec.shape[1:])
        if arr.shape == per_sample:
            arr = arr[None]
        if tuple(arr.shape[1:]) != per_sample:
            raise DataError(
                f"samples '{spec.name}' in {path} have shape {tuple(arr.shape)}; expected "
                f"(N, {', '.join(map(str, per_sample))}) of model-ready (normalised) inputs"
            )
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
            raise DataError(f"samples in {path} have dtype {arr.dtype}; expected numbers")
        arrays[spec.name] = np.ascontiguousarray(arr[:MAX_SAMPLES], dtype=np.dtype(spec.dtype))
        counts.add(len(arrays[spec.name]))
    if len(counts) != 1:
        raise DataError(f"samples in {path} have different counts per input ({sorted(counts)}); give one row per sample")
    n = counts.pop()
    return [{name: arr[i:i + 1] for name, arr in arrays.items()} for i in range(n)]


def random_feed(specs: list, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Seeded inputs for every spec: standard normals for floats, 0/1 for integers and booleans."""
    feed = {}
    for spec in specs:
        shape = (batch, *spec.shape[1:])
        if spec.dtype.startswith("float"):
            feed[spec.name] = rng.standard_normal(shape, dtype=np.float32).astype(spec.dtype)
        elif spec.dtype == "bool":
            feed[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feed[spec.name] = rng.integers(0, 2, size=shape).astype(spec.dtype)
    return feed


def _torch_outputs(module, feed: dict[str, np.ndarray], what: str) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        try:
            out = module(*(torch.from_numpy(np.ascontiguousarray(x)) for x in feed.values()))
        except Exception as exc:  # noqa: BLE001 - model code raised
            shapes = [list(x.shape) for x in feed.values()]
            raise ExportError(f"PyTorch model fails on {what} (shapes {shapes}): {str(exc)[:200]}") from None
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    return [o.detach().float().cpu().numpy() for o in outs]


def _errors(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> tuple[float, float, bool]:
    if ref.shape != got.shape:
        return float("inf"), float("inf"), False
    d = compare_outputs(ref, got, rel_floor=max(atol, 1e-12), atol=atol, rtol=rtol)
    return d.max_abs, d.max_rel, bool(d.within_tolerance)


def check_parity(
    module: Any,
    onnx_bytes: bytes,
    *,
    inputs: list,
    output_names: list[str],
    batch_sizes: list[int],
    samples: list[dict[str, np.ndarray]] | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    n_random: int = 3,
    seed: int = 0,
) -> ParityResult:
    """Compare PyTorch and ONNX Runtime outputs on every input (`inputs`: `InputSpec`s); pass when
    every element is within atol + rtol·|ref|."""
    session = ort_session(onnx_bytes, label="the exported model")
    cases: list[tuple[str, dict[str, np.ndarray]]] = []
    for batch in batch_sizes:
        for i in range(n_random):
            rng = np.random.default_rng([seed, batch, i])
            cases.append((f"random seed {i}, batch {batch}", random_feed(inputs, batch, rng)))
    n_samples = 0 if samples is None else len(samples)
    for i in range(n_samples):
        cases.append((f"sample {i}", samples[i]))
    worst: dict[str, OutputParity] = {n: OutputParity(n, 0.0, 0.0, True, "") for n in output_names}
    for what, x in cases:
        ref = _torch_outputs(module, x, what)
        try:
            got = session.run(output_names, x)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            shapes = [list(v.shape) for v in x.values()]
            raise ExportError(f"ONNX Runtime fails on {what} (shapes {shapes}): {str(exc)[:200]}") from None
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
