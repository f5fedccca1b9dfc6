"""The small interface every quantization backend implements (the gate algorithm is written once).

A backend turns an FP32 ONNX file into a quantized artifact, keeping the named nodes in FP32, and
says which nodes it could quantize.  Evaluation, sensitivity ranking and FP32 fallback live in
`medge.quantize.gate` and work the same for every backend.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# ONNX op types whose weights/activations INT8 quantization touches: the FP32-fallback candidates.
QUANTIZABLE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass
class QuantOptions:
    """Backend-independent settings of one quantization run."""

    precision: str = "int8"
    calib_method: str = "minmax"
    keep_io_fp32: bool = True
    trt_compatible: bool = False
    #: activation tensors to quantize to 16 bits instead of 8 (weights stay int8: "w8a16")
    int16_tensors: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def output_head_nodes(model: Any) -> list[str]:
    """Nodes from each graph output back to (and including) the first compute node on the way.

    Keeping this head in FP32 stops the final probabilities / millivolts being rounded to 8 bits
    (which creates ties that cost AUROC, and steps of tens of µV on ECG) at a negligible size cost.
    """
    producer = {t: n for n in model.graph.node for t in n.output}
    head: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        head.append(node.name)
        if node.op_type not in QUANTIZABLE_OPS:
            stack.extend(t for t in node.input if t in producer)
    return head


class QuantBackend(abc.ABC):
    """One quantization toolkit.  Subclasses implement `quantize` and may refine the rest."""

    name: str = "backend"
    #: suffix of the artifact `quantize` writes: ".onnx" or ".xml" (OpenVINO IR, with a ".bin").
    artifact_suffix: str = ".onnx"
    #: medge runtime that evaluates the artifact (a name in `medge.runtimes.RUNTIMES`).
    runtime: str = "onnxruntime"
    #: runtime options for the FP32 reference (e.g. OpenVINO f32 inference precision).
    reference_options: dict[str, Any] = {}
    precisions: tuple[str, ...] = ("int8",)

    def prepare(self, onnx_in: Path, workdir: Path) -> Path:
        """Return the FP32 ONNX file that quantization and node names refer to (default: as is)."""
        return onnx_in

    @abc.abstractmethod
    def quantize(self, onnx_in: Path, out: Path, calib: Iterable[dict[str, np.ndarray]],
                 exclude_nodes: list[str], options: QuantOptions) -> None:
        """Write the quantized artifact to `out`, keeping `exclude_nodes` in FP32."""

    def candidate_nodes(self, model: Any, options: QuantOptions) -> list[str]:
        """Names of the nodes of an ``onnx.ModelProto`` that may be moved back to FP32."""
        if options.precision == "fp16":
            return [n.name for n in model.graph.node if n.name and n.op_type not in ("Cast", "Constant")]
        return [n.name for n in model.graph.node if n.name and n.op_type in QUANTIZABLE_OPS]

    def supports_fallback(self, options: QuantOptions) -> bool:
        """Whether `quantize` can keep individual nodes in FP32 for this precision."""
        return True

    def supports_int16_activations(self, options: QuantOptions) -> bool:
        """Whether `quantize` can widen chosen activation tensors to 16 bits (`options.int16_tensors`)."""
        return False

    def sensitivity_proxy(self, prepared: Path, first_artifact: Path, workdir: Path,
                          calib: list[dict[str, np.ndarray]], options: QuantOptions) -> Path:
        """An ONNX model whose intermediate tensors show this backend's quantization error.

        Default: the first (fully quantized) artifact itself, which must be ONNX.
        """
        return first_artifact

    def recovery_schemes(self, model: Any, options: QuantOptions) -> list[tuple[str, dict[str, Any]]]:
        """Whole-model alternatives tried, in order, when the gate fails before any node moves to FP32:
        ``(label, options.extra overrides)`` pairs, e.g. a toolkit's transformer mode.  Default: none."""
        return []

    def float_compute_ops(self, artifact: Path) -> list[str]:
        """Compute ops (matmul/conv) the toolkit itself left in float in `artifact` (default: none known)."""
        return []

    def artifact_files(self, out: Path) -> list[Path]:
        """Every file that makes up the artifact written at `out`."""
        return [out]

    def finalize(self, artifact: Path, metadata: dict[str, str]) -> None:
        """Embed medge metadata (``metadata_props``-style key/value strings) in the artifact."""
