"""`QuantizeReport`: what was quantized, with which data, and whether it passed its gate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from medge.reports import Report, data_text, details_row, gate_text, human_bytes, notes_rows, verdict


@dataclass
class Attempt:
    """One quantization try: the nodes kept in FP32, the 16-bit activations and the metric it reached."""

    fp32_nodes: list[str]
    int16_tensors: list[str] = field(default_factory=list)
    #: the backend's whole-model scheme of this try (None: its default), see `recovery_schemes`
    scheme: str | None = None
    metric: float | None = None
    drop: float | None = None
    ci95: list[float] | None = None
    passed: bool | None = None


@dataclass
class QuantizeReport(Report):
    """JSON report of `medge quantize`."""

    title: ClassVar[str] = "medge quantize"
    model: str = ""
    output: str | None = None
    precision: str = ""
    backend: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    size_bytes: dict[str, int | None] = field(default_factory=dict)
    size_ratio: float | None = None
    #: initializer (weight) bytes of ONNX artifacts; graph text dominates the file size of tiny models
    weight_bytes: dict[str, int | None] = field(default_factory=dict)
    metric: dict[str, Any] | None = None
    fp32_fallback_nodes: list[str] = field(default_factory=list)
    #: activation tensors quantized to 16 bits (weights int8) to pass the gate
    int16_activation_tensors: list[str] = field(default_factory=list)
    output_head_fp32: list[str] = field(default_factory=list)
    #: the backend's whole-model scheme that passed (e.g. "transformer" for NNCF), None: its default
    scheme: str | None = None
    #: matmul/conv ops the toolkit itself kept in float (e.g. NNCF's transformer patterns)
    float_compute_ops: list[str] = field(default_factory=list)
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.metric is None or self.metric.get("passed") is not False

    def table_rows(self) -> list[tuple[str, str]]:
        m = self.metric
        if m is None:
            head = verdict(True, f"{self.precision} artifact written to {self.output} (no accuracy gate: pass --eval)")
        elif m.get("passed") is False:
            head = verdict(False, f"{m.get('name')} drop {m.get('drop', float('nan')):.4g} > max {m.get('max_drop')}; "
                                  "nothing written")
        else:
            head = verdict(True, f"{self.precision} artifact written to {self.output}")
        before, after = self.size_bytes.get("before"), self.size_bytes.get("after")
        fallback = len(self.fp32_fallback_nodes) + len(self.int16_activation_tensors)
        rows = [
            ("result", head),
            *(("WARNING", w) for w in self.warnings),
            ("model", f"{self.model} → {self.precision} with {self.backend}"),
            ("calibration", data_text(self.calibration)),
            ("evaluation", data_text(self.evaluation)),
            ("gate", gate_text({**m, "max_drop": m.get("max_drop")}) if m else "none (no --eval)"),
            ("fallback", f"{len(self.fp32_fallback_nodes)} node(s) fp32, {len(self.int16_activation_tensors)} "
                         f"activation(s) 16-bit, {len(self.attempts)} attempt(s)"
                         + (f", scheme {self.scheme}" if self.scheme else "") if fallback or self.attempts else "none"),
            ("size", f"{human_bytes(before)} → {human_bytes(after)}"
                     + (f" ({self.size_ratio:.2f}x)" if self.size_ratio else "")),
            ("time", f"{self.seconds:.1f} s"),
        ]
        return rows + notes_rows(self.notes) + [details_row()]
