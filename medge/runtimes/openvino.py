"""OpenVINO backend: reads an IR (.xml + .bin) or an .onnx file and compiles it for CPU/GPU/NPU.

The precision hint is always explicit: OpenVINO would run bf16 on CPUs that support it, so
``INFERENCE_PRECISION_HINT`` is ``f32`` on CPU unless the ``precision`` option says otherwise
("bf16", "f16").  Options: ``precision``, ``profiling=True`` (``PERF_COUNT`` → `layer_profile`),
``config`` (a dict of extra OpenVINO properties).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medge.common.errors import MedgeError
from medge.common.registry import import_optional
from medge.runtimes.base import Runtime, TensorInfo

PRECISIONS = ("f32", "bf16", "f16")


def _shape(partial_shape: Any) -> tuple[int | None, ...]:
    return tuple(d.get_length() if d.is_static else None for d in partial_shape)


def _batch_up_to(ov: Any, model: Any, max_batch: int, name: str) -> None:
    """Let a single-input model whose batch is fixed at 1 take batches of 1 to `max_batch` (a bounded
    dynamic batch dimension); `MedgeError` when the graph cannot be reshaped."""
    if len(model.inputs) != 1:
        raise MedgeError(f"openvino: {name} has {len(model.inputs)} inputs; a batch is set on single-input models")
    port = model.inputs[0]
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic or len(shape) == 0 or not (shape[0].is_static and shape[0].get_length() == 1):
        return  # already dynamic, or no batch axis to set
    try:
        model.reshape({port: ov.PartialShape([ov.Dimension(1, max_batch), *list(shape)[1:]])})
    except RuntimeError as exc:
        raise MedgeError(f"openvino: {name} cannot take a batch of up to {max_batch}: "
                         f"{str(exc).strip().splitlines()[0]}") from exc


@dataclass
class OpenVinoRuntime(Runtime):
    """A model compiled by ``openvino.Core`` with one reusable infer request.  Option ``max_batch=N``
    lets a single-input model whose batch is fixed at 1 take batches of 1 to N (bounded dynamic batch)."""

    library: ClassVar[str | None] = "openvino"
    name: str = "openvino"
    _compiled: Any = None
    _request: Any = None
    _profile_runs: dict[str, dict[str, Any]] | None = None

    def _load(self, artifact: Path, device: str, threads: int | None, **options: Any) -> None:
        ov = import_optional("openvino", what="the openvino runtime")
        core = ov.Core()
        ov_device = device.upper()
        available = core.available_devices
        if ov_device.split(".")[0] not in {d.split(".")[0] for d in available} and ov_device not in ("AUTO",):
            raise MedgeError(
                f"openvino: device '{device}' is not available here; available: {', '.join(available)} "
                "(use --runtime-device CPU)"
            )
        precision = options.get("precision") or ("f32" if ov_device == "CPU" else None)
        if precision is not None and precision not in PRECISIONS:
            raise MedgeError(f"openvino: unknown precision '{precision}'; choices: {', '.join(PRECISIONS)}")
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads and ov_device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if options.get("profiling"):
            config["PERF_COUNT"] = True
            self._profile_runs = {}
        config.update(options.get("config") or {})
        if artifact.suffix == ".xml" and not artifact.with_suffix(".bin").exists():
            raise MedgeError(f"openvino: {artifact.name} has no weights file {artifact.with_suffix('.bin').name} beside it")
        try:
            model = core.read_model(str(artifact))
            if options.get("max_batch"):
                _batch_up_to(ov, model, int(options["max_batch"]), artifact.name)
            self._compiled = core.compile_model(model, ov_device, config)
        except RuntimeError as exc:
            raise MedgeError(f"openvino cannot load {artifact.name}: {str(exc).strip().splitlines()[0]}") from exc
        self._request = self._compiled.create_infer_request()

    def _io(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        def info(port: Any) -> TensorInfo:
            return TensorInfo(port.get_any_name(), _shape(port.get_partial_shape()), str(port.get_element_type().to_dtype()))

        return [info(p) for p in self._compiled.inputs], [info(p) for p in self._compiled.outputs]

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._request.infer(feeds)
        out = {t.name: np.array(result[port]) for t, port in zip(self._outputs, self._compiled.outputs)}
        if self._profile_runs is not None:
            self._collect_profile()
        return out

    def _collect_profile(self) -> None:
        runs = self._profile_runs if self._profile_runs is not None else {}
        for item in self._request.get_profiling_info():
            if item.status.name != "EXECUTED":
                continue
            row = runs.setdefault(
                item.node_name,
                {"name": item.node_name, "op": item.node_type, "exec_type": item.exec_type, "calls": 0, "total_us": 0.0},
            )
            row["calls"] += 1
            row["total_us"] += item.real_time.total_seconds() * 1e6

    def layer_profile(self) -> list[dict[str, Any]]:
        """Per-layer real times from ``PERF_COUNT`` (slowest first); [] unless ``profiling=True``."""
        if not self._profile_runs:
            return []
        rows = [dict(r, mean_us=r["total_us"] / max(r["calls"], 1)) for r in self._profile_runs.values()]
        return sorted(rows, key=lambda r: r["total_us"], reverse=True)

    def _close(self) -> None:
        self._request = None
        self._compiled = None
