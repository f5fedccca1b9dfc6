"""ONNX Runtime backend: CPU, plus the CUDA and TensorRT execution providers where installed.

Options: ``profiling=True`` turns on ORT's profiler; `layer_profile()` then parses its JSON trace
into per-node timings.  ``emulate_qdq=True`` turns graph optimisation off, so a Q/DQ graph runs as
written (QuantizeLinear → DequantizeLinear → float Conv/MatMul) instead of through this host's int8
kernels: the host-independent reference for an engine that accumulates int8 products in int32
without saturation (TensorRT), where AVX2 hosts without VNNI saturate int16 intermediate sums.
Sessions run sequentially with `threads` intra-op threads.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medge.common.errors import MedgeError, ModelLoadError
from medge.common.registry import import_optional
from medge.runtimes.base import Runtime, TensorInfo

# medge device name → ONNX Runtime execution providers, most preferred first.
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}

# ONNX tensor type strings → numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _dim(d: Any) -> int | str | None:
    return d if isinstance(d, int) or d is None else str(d)


@dataclass
class OrtRuntime(Runtime):
    """An ONNX model in an ``onnxruntime.InferenceSession``."""

    library: ClassVar[str | None] = "onnxruntime"
    name: str = "onnxruntime"
    _session: Any = None
    _profile_file: str | None = None
    _profile_dir: str | None = None

    def _load(self, artifact: Path, device: str, threads: int | None, **options: Any) -> None:
        ort = import_optional("onnxruntime", what="ONNX artifacts")

        key = device.lower()
        if key not in PROVIDERS:
            raise MedgeError(f"onnxruntime: unknown device '{device}'; choices: {', '.join(PROVIDERS)}")
        wanted = PROVIDERS[key]
        available = ort.get_available_providers()
        if wanted[0] not in available:
            raise MedgeError(
                f"onnxruntime: device '{device}' needs {wanted[0]}, which this onnxruntime build lacks "
                f"(available: {', '.join(available)}); install onnxruntime-gpu or use --runtime-device cpu"
            )
        profile_prefix = None
        if options.get("profiling"):
            self._profile_dir = tempfile.mkdtemp(prefix="medge-ort-prof-")
            profile_prefix = os.path.join(self._profile_dir, "ort")
        self._session = ort_session(artifact, threads=threads, providers=[p for p in wanted if p in available],
                                    optimize=not options.get("emulate_qdq"), profile_prefix=profile_prefix)

    def _io(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        def info(arg: Any) -> TensorInfo:
            return TensorInfo(arg.name, tuple(_dim(d) for d in arg.shape), _ORT_TYPES.get(arg.type, arg.type))

        return [info(a) for a in self._session.get_inputs()], [info(a) for a in self._session.get_outputs()]

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [t.name for t in self._outputs]
        return dict(zip(names, self._session.run(names, feeds)))

    def layer_profile(self) -> list[dict[str, Any]]:
        """Per-node kernel times (mean µs per run) from ORT's profiler; [] unless ``profiling=True``."""
        if self._session is None or self._profile_dir is None:
            return []
        if self._profile_file is None:
            self._profile_file = self._session.end_profiling()
        return parse_ort_trace(Path(self._profile_file))

    def _close(self) -> None:
        if self._profile_dir is not None:
            if self._session is not None and self._profile_file is None:
                self._profile_file = self._session.end_profiling()
            import shutil

            shutil.rmtree(self._profile_dir, ignore_errors=True)
            self._profile_dir = None
        self._session = None


def ort_session(model: Path | bytes, *, threads: int | None = None, providers: list[str] | None = None,
                optimize: bool = True, profile_prefix: str | None = None, label: str | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` of an ONNX file or serialized model, run sequentially:
    the one place medge creates one.  `optimize` False runs the graph as written (no fusions);
    failures are one `ModelLoadError` line naming `label` (default: the file name)."""
    ort = import_optional("onnxruntime", what="ONNX artifacts")

    so = ort.SessionOptions()
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only; warnings would interleave with medge's own lines
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=so, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph/NoSuchFile types
        name = label or (Path(model).name if not isinstance(model, bytes) else "the model")
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(f"onnxruntime cannot load {name}: {first[:300]}") from None


def parse_ort_trace(path: Path) -> list[dict[str, Any]]:
    """Aggregate an ORT profiler trace into per-node rows, slowest first.

    Each row: ``name``, ``op`` (operator type), ``provider``, ``calls``, ``total_us``, ``mean_us``.
    """
    events = json.loads(path.read_text())
    rows: dict[str, dict[str, Any]] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        node = ev["name"][: -len("_kernel_time")]
        args = ev.get("args", {})
        row = rows.setdefault(
            node, {"name": node, "op": args.get("op_name", ""), "provider": args.get("provider", ""), "calls": 0, "total_us": 0.0}
        )
        row["calls"] += 1
        row["total_us"] += float(ev.get("dur", 0))
    for row in rows.values():
        row["mean_us"] = row["total_us"] / max(row["calls"], 1)
    return sorted(rows.values(), key=lambda r: r["total_us"], reverse=True)
