"""`QuantizeReport`: what was quantized, with which data, and whether it passed its gate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from medge.common.reports import Report, data_text, details_row, gate_text, human_bytes, notes_rows, verdict
from medge.quantize.ladder import Attempt


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
    #: the parity gate (no --eval): the last attempt's parity vs FP32 and the limits it was judged by
    parity: dict[str, Any] | None = None
    #: whose INT8 numerics judged the attempts (`medge.devices.int8_numerics`)
    numerics: dict[str, Any] | None = None
    attempts: list[Attempt] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        if self.parity is not None and self.parity.get("passed") is False:
            return False
        return self.metric is None or self.metric.get("passed") is not False

    def table_rows(self) -> list[tuple[str, str]]:
        m = self.metric
        p = self.parity
        if m is None and p is not None and p.get("passed") is False:
            head = verdict(False, f"parity vs FP32: {'; '.join(p.get('failed', []))}; nothing written")
        elif m is None and p is not None:
            head = verdict(True, f"{self.precision} artifact written to {self.output} (parity gate vs FP32)")
        elif m is None:
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
            ("gate", gate_text({**m, "max_drop": m.get("max_drop")}) if m else
             _parity_text(p) if p else "none (no --eval)"),
            *((("numerics", f"{self.numerics['name']}: {self.numerics['detail']}"),) if self.numerics else ()),
            *(("rung", rung_text(i, a)) for i, a in enumerate(self.attempts) if len(self.attempts) > 1),
            ("fallback", f"{len(self.fp32_fallback_nodes)} node(s) fp32, {len(self.int16_activation_tensors)} "
                         f"activation(s) 16-bit, {len(self.attempts)} attempt(s)"
                         + (f", scheme {self.scheme}" if self.scheme else "") if fallback or self.attempts else "none"),
            ("size", f"{human_bytes(before)} → {human_bytes(after)}"
                     + (f" ({self.size_ratio:.2f}x)" if self.size_ratio else "")),
            ("time", f"{self.seconds:.1f} s"),
        ]
        return rows + notes_rows(self.notes) + [details_row()]


def _parity_text(parity: dict[str, Any]) -> str:
    """One line of the parity gate: its figures and the limits they were judged by."""
    cos, err = parity.get("min_cosine"), parity.get("max_channel_rms_error")
    figures = ", ".join(x for x in (f"min cosine {cos:.4f}" if cos is not None else "",
                                    f"max channel error {err:.0%}" if err is not None else "") if x)
    limits = ", ".join(f"{k} {parity[k]:g}" for k in ("min_cosine_required", "max_channel_rms_error_allowed",
                                                       "atol", "rtol") if parity.get(k) is not None)
    return f"parity vs FP32 on {parity.get('samples')} samples: {figures} (limits: {limits})"


def rung_text(index: int, attempt: Attempt) -> str:
    """One fallback rung: what it moved and whether it passed."""
    moved = f"{len(attempt.fp32_nodes)} node(s) fp32, {len(attempt.int16_tensors)} activation(s) 16-bit"
    result = "passed" if attempt.passed else "failed" if attempt.passed is False else "not judged"
    why = ""
    parity, drop = attempt.gate.get("parity"), attempt.gate.get("drop")
    if parity:
        why = f" (min cosine {parity.get('min_cosine') or float('nan'):.4f}, max channel error " \
              f"{parity.get('max_channel_rms_error') or float('nan'):.0%})"
    elif drop is not None:
        why = f" (drop {drop:.4g})"
    return f"{index}: {moved}" + (f", scheme {attempt.scheme}" if attempt.scheme else "") + f": {result}{why}"
