"""Reports of `medge export` and `medge inspect`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from medge.common.reports import Report, details_row, human_bytes, human_count, notes_rows, tensors_text, verdict


@dataclass
class OutputParity:
    """Worst disagreement between PyTorch and ONNX Runtime on one output."""

    name: str
    max_abs_error: float
    max_rel_error: float
    passed: bool
    worst_input: str = ""  # e.g. "random seed 2, batch 2" or "sample 3"


@dataclass
class ParityResult:
    """PyTorch vs ONNX Runtime (FP32, CPU) on seeded random inputs and optional real samples."""

    max_abs_error: float
    max_rel_error: float
    tolerance: dict[str, float]
    passed: bool
    batch_sizes: list[int]
    n_random: int
    n_samples: int
    outputs: list[OutputParity] = field(default_factory=list)

    def failure_message(self) -> str:
        """One line naming the failing output(s) and their errors."""
        bad = [o for o in self.outputs if not o.passed]
        parts = [f"output '{o.name}' max abs error {o.max_abs_error:.3g} (rel {o.max_rel_error:.3g}) on {o.worst_input}"
                 for o in bad]
        return "; ".join(parts)


@dataclass
class ExportReport(Report):
    """What `medge export` produced and how well the ONNX file matches PyTorch."""

    title: ClassVar[str] = "export"
    model: str = ""
    onnx: str = ""
    sha256: str = ""
    source_sha256: str = ""
    exporter: str = ""
    opset: int = 0
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    params: int = 0
    onnx_params: int = 0
    macs: int = 0
    onnx_macs: int = 0
    size_bytes: int = 0
    dynamic_batch: bool = False
    slimmed: bool = False
    notes: list[str] = field(default_factory=list)
    parity: ParityResult | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    written: bool = False
    weights: str = ""  # where the weights came from (demo, --weights, random initialisation…)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.parity is not None and self.parity.passed

    def table_rows(self) -> list[tuple[str, str]]:
        parity = self.parity
        if parity is None:
            verdict_text = verdict(False, "no parity check ran")
        else:
            tol = parity.tolerance
            verdict_text = verdict(parity.passed, f"ONNX Runtime vs PyTorch max abs error {parity.max_abs_error:.3g} "
                                   f"(limit atol {tol.get('atol', 0):g} + rtol {tol.get('rtol', 0):g}·|ref|) on "
                                   f"{parity.n_random} random + {parity.n_samples} real inputs")
        labels = self.metadata.get("labels") or []
        rows = [
            ("result", verdict_text),
            *(("WARNING", w) for w in self.warnings),
            ("model", f"{self.model} ({self.metadata.get('task', 'unknown')}"
                      f"{', ' + str(len(labels)) + ' labels' if labels else ''})"),
            ("weights", self.weights or "?"),
            ("onnx", f"{self.onnx if self.written else self.onnx + ' (not written)'}, {human_bytes(self.size_bytes)}, "
                     f"opset {self.opset} ({self.exporter}{', slimmed' if self.slimmed else ''})"),
            ("inputs → outputs", f"{tensors_text(self.inputs)} → {tensors_text(self.outputs)}"),
            ("size", f"{human_count(self.params)} parameters, {human_count(self.macs)} MACs"),
            ("time", f"{self.seconds:.1f} s"),
        ]
        rows += notes_rows(self.notes)
        return rows + [details_row()]
