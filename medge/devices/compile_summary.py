"""The printed summary of `medge compile` (about ten lines, verdict first); the JSON keeps everything."""

from __future__ import annotations

from typing import Any

from medge.common.reports import data_text, details_row, gate_text, human_bytes, notes_rows, verdict
from medge.quantize.ladder import Attempt
from medge.quantize.report import rung_text


def preflight_text(pre: dict[str, Any]) -> str:
    """Node count and how many are unsupported / fall back (the lists are in the JSON report)."""
    if not pre:
        return "-"

    def count(key: str) -> int:
        value = pre.get(key)
        return len(value) if isinstance(value, list) else int(value or 0)

    nodes = f"{pre['nodes']} nodes: " if pre.get("nodes") is not None else ""
    text = f"{nodes}{count('unsupported')} unsupported, {count('fallback')} fall back"
    return f"{text} ({pre.get('table') or pre.get('checker', '')})".replace(" ()", "")


def next_step(report: Any) -> str:
    """What the user does next with the bundle."""
    if not report.written:
        return "fix the error above and compile again"
    if report.runtime == "tensorrt" and not str(report.primary_artifact or "").endswith((".engine", ".plan")):
        return f"on the device: bash {report.bundle}/build_engine.sh, then medge profile {report.bundle}"
    return f"medge profile {report.bundle} (on the device: --device ssh://USER@HOST)"


def _int8_rows(gate: dict[str, Any]) -> list[tuple[str, str]]:
    """The INT8 gate's numerics, scheme and fallback rungs (when the ladder ran more than one)."""
    rows = []
    numerics, scheme = gate.get("numerics"), gate.get("int8_scheme")
    if numerics:
        rows.append(("numerics", f"{numerics['name']}: {numerics['detail']}"))
    if scheme:
        rows.append(("int8 scheme", f"{scheme['name']} ({scheme['reason']})"))
    rungs = gate.get("rungs") or []
    if len(rungs) > 1:
        rows += [("rung", rung_text(i, Attempt(**r))) for i, r in enumerate(rungs)]
    return rows


def compile_rows(report: Any) -> list[tuple[str, str]]:
    """The summary rows of a `CompileReport`."""
    total = sum(report.files.values())
    if report.written:
        head = verdict(report.ok, f"bundle written to {report.bundle} ({len(report.files)} files, {human_bytes(total)})")
    else:
        unsupported = report.preflight.get("unsupported")
        ops = sorted({u.get("op", "?") for u in unsupported}) if isinstance(unsupported, list) else []
        why = (f"{len(unsupported)} node(s) the target cannot run ({', '.join(ops[:5])})" if ops
               else "the gate failed" if (report.gate or {}).get("passed") is False else "see the error line")
        head = verdict(False, f"{why}; nothing written to {report.bundle}")
    primary = report.primary_artifact
    artifact = f"{primary} ({human_bytes(report.files.get(primary))}), runs on {report.runtime} ({report.runtime_device})" \
        if primary else "nothing built"
    rows = [
        ("result", head),
        *(("WARNING", w) for w in report.warnings),
        ("target", f"{report.target_display_name or report.target} [{report.target}], {report.recipe} recipe"),
        ("precision", f"{report.precision}: {artifact}"),
        ("calibration", data_text(report.calibration)),
        ("gate", gate_text(report.gate)),
        *_int8_rows(report.gate or {}),
        ("preflight", preflight_text(report.preflight)),
        ("manifest sha256", report.manifest_sha256 or "-"),
        ("next", next_step(report)),
        ("time", f"{report.seconds:.1f} s"),
    ]
    rows += notes_rows([n for n in report.notes if not n.startswith("calibrated on synthetic")], limit=1)
    return rows + [details_row()]
