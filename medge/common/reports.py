"""The dataclass reports every command returns.

Each report has a stable JSON form (`to_dict`) and a human table (`to_table`).  Tests and
benchmarks read the JSON, never the printed text.  Fields hold plain Python values (numpy
scalars and arrays are converted by `to_dict`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths and nested dataclasses to JSON-friendly values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalar or array
        return value.tolist()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"[{', '.join(_fmt(v) for v in value[:8])}, … {len(value)} items]"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _flatten(prefix: str, value: Any, rows: list[tuple[str, str]]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, rows)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, rows)
    else:
        rows.append((prefix, _fmt(value)))


def human_bytes(n: int | float | None) -> str:
    """Bytes in B/KB/MB/GB (powers of 1000, as file managers and `medge profile` show them)."""
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}" if n / scale < 100 else f"{n / scale:.0f} {unit}"
    return f"{int(n)} B"


def human_count(n: int | float | None) -> str:
    """A count (parameters, MACs) in K/M/G: 138264 → '138 K', 87764892 → '87.8 M'."""
    if n is None:
        return "?"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}" if n / scale < 100 else f"{n / scale:.0f} {unit}"
    return str(int(n))


def verdict(ok: bool, text: str) -> str:
    """The first line of a summary table: PASS/FAIL and why."""
    return f"{'PASS' if ok else 'FAIL'} - {text}" if text else ("PASS" if ok else "FAIL")


def tensors_text(tensors: list[dict[str, Any]]) -> str:
    """``[{"name", "shape", "dtype"}]`` → ``image 1x1x224x224 float32``, comma-joined."""
    parts = []
    for t in tensors:
        shape = "x".join("?" if d is None or (isinstance(d, int) and d < 0) else str(d) for d in t.get("shape") or [])
        parts.append(f"{t.get('name', '?')} {shape} {t.get('dtype', '')}".strip())
    return ", ".join(parts) or "-"


def notes_rows(notes: list[str], limit: int = 2) -> list[tuple[str, str]]:
    """At most `limit` note rows; the rest are counted (they are all in the JSON report)."""
    rows = [("note", n) for n in notes[:limit]]
    if len(notes) > limit:
        rows.append(("note", f"… {len(notes) - limit} more in the JSON report"))
    return rows


def details_row() -> tuple[str, str]:
    """The last summary line: where the full report is."""
    return ("details", "--json or --report PATH")


def data_text(summary: dict[str, Any] | None) -> str:
    """``300 samples from synthetic:cxr (synthetic demo data)`` for a calibration/evaluation summary."""
    if not summary:
        return "-"
    n = summary.get("n", summary.get("used", "?"))
    source = str(summary.get("source", "?"))
    synthetic = " (synthetic demo data)" if source.startswith("synthetic") else ""
    return f"{n} samples from {source}{synthetic}"


def gate_text(gate: dict[str, Any] | None) -> str:
    """One line for a metric gate (drop vs max drop, CI) or a parity gate (cosine vs FP32)."""
    if not gate:
        return "none (no --eval/--max-drop; not int8)"
    parts = []
    if gate.get("name") and gate.get("quantized") is not None:
        text = (f"{gate['name']} {gate.get('reference', float('nan')):.4g} → {gate['quantized']:.4g}, "
                f"drop {gate.get('drop', float('nan')):.4g} (max {gate.get('max_drop')})")
        if gate.get("ci95"):
            text += f", 95% CI {gate['ci95'][0]:.4g}…{gate['ci95'][1]:.4g}"
        parts.append(text)
    parity = gate.get("parity") or {}
    if parity.get("min_cosine") is not None:
        required = parity.get("min_cosine_required")
        parts.append(f"min cosine vs fp32 {parity['min_cosine']:.4f} ({'required ' + str(required) + ', ' if required else ''}"
                     f"{parity.get('samples', '?')} samples)")
    if parity.get("min_pearson") is not None:
        required = parity.get("min_pearson_required")
        parts.append(f"min channel Pearson r vs fp32 {parity['min_pearson']:.4f}"
                     f"{' (required ' + str(required) + ')' if required else ''}")
    state = {True: "PASS", False: "FAIL"}.get(gate.get("passed"), "n/a")
    return f"{state}: {'; '.join(parts) or 'see the JSON report'}"


def render_table(rows: list[tuple[str, str]], title: str | None = None) -> str:
    """Render two-column rows as an aligned plain-text table."""
    width = max((len(k) for k, _ in rows), default=0)
    lines = [title, "-" * len(title)] if title else []
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)


@dataclass
class Report:
    """Base class: a dataclass with a stable JSON form and a plain-text table."""

    title: ClassVar[str] = "report"

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON-ready form of the report."""
        return _plain(self)

    def table_rows(self) -> list[tuple[str, str]]:
        """(key, value) rows for the printed table; subclasses may override."""
        rows: list[tuple[str, str]] = []
        _flatten("", self.to_dict(), rows)
        return rows

    def to_table(self) -> str:
        """Human-readable table of the report."""
        return render_table(self.table_rows(), self.title)

    @property
    def ok(self) -> bool:
        """Whether the command succeeded; the CLI exits 1 when this is False."""
        return True


@dataclass
class ListReport(Report):
    """A list of records (zoo list, devices list) printed as a columnar table."""

    title: ClassVar[str] = "list"
    kind: str = ""
    items: list[dict[str, Any]] = field(default_factory=list)

    def to_table(self) -> str:
        if not self.items:
            return f"no {self.kind}"
        cols = list(self.items[0])
        cells = [[_fmt(item.get(c, "")) for c in cols] for item in self.items]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
        line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
        return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)])


@dataclass
class DictReport(Report):
    """A free-form report (zoo show, devices show, inspect) with a custom title."""

    title: ClassVar[str] = "details"
    name: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain({"name": self.name, **self.data})

    def to_table(self) -> str:
        rows: list[tuple[str, str]] = []
        _flatten("", self.to_dict(), rows)
        return render_table(rows, self.name or self.title)
