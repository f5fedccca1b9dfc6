"""Drive a matrix: skip what `--resume` may trust, run the rest on an engine with timeouts and retries,
append one results.jsonl row per attempt, show progress, and write the result table."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from medge.common.errors import MedgeError, UsageError
from medge.common.reports import Report
from medge.scale.engines import LocalEngine, RayEngine, Running
from medge.scale.key import cell_key
from medge.scale.results import append_row, last_rows, read_rows, render, write_tables
from medge.scale.spec import Cell, MatrixSpec

RETRIED = ("build_failed", "timeout")  # a gate failure or an unsupported cell is an answer, not an accident
FAILED = ("gate_failed", "build_failed", "timeout", "interrupted")


@dataclass
class MatrixReport(Report):
    """The matrix run: one final row per cell, counts, and where the tables are."""

    title: ClassVar[str] = "medge matrix"
    matrix: str = ""
    output: str = ""
    engine: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    seconds: float = 0.0
    files: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(row["status"] in FAILED for row in self.rows)

    def to_table(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        return (f"{render(self.rows)}\n\n{len(self.rows)} cells ({counts}; {self.skipped} resumed) in "
                f"{self.seconds:.1f} s with --engine {self.engine}; {self.files.get('markdown', '')} (+ json, png), "
                f"one row per attempt in {self.output}/results.jsonl")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done, self.failed, self.t0, self.durations = total, 0, 0, time.monotonic(), []

    def line(self, running: int, text: str) -> None:
        left = self.total - self.done
        eta = "?"
        if self.durations and left:
            per = sum(self.durations) / len(self.durations)
            eta = f"{per * left / max(1, running or 1):.0f} s"
        print(f"medge: matrix [{self.done}/{self.total} done, {running} running, {self.failed} failed, ETA {eta}] {text}",
              file=sys.stderr, flush=True)


def _precheck(cell: Cell) -> str | None:
    from medge.devices import TARGETS

    target = TARGETS.get(cell.target)
    if cell.precision not in target.precisions:
        return f"target '{cell.target}' does not support {cell.precision}; supported: {', '.join(target.precisions)}"
    return None


def run_matrix(spec: MatrixSpec, out: Path, *, engine: str = "local", jobs: int | None = None,
               address: str | None = None, resume: bool = False) -> MatrixReport:
    """Run every cell of `spec` into `out`; returns the report (raises KeyboardInterrupt after a clean stop)."""
    t0 = time.monotonic()
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} is a file; give a folder for the matrix results")
    out = out.resolve()  # cells get absolute paths (their own processes, Ray workers)
    jsonl = out / "results.jsonl"
    if jsonl.exists() and not resume and read_rows(jsonl):
        raise UsageError(f"{out} already holds results; pass --resume to continue it or choose another -o folder")
    keys = {c.cell_id: cell_key(c) for c in spec.cells}  # may fail (a module that cannot be found): before any work
    out.mkdir(parents=True, exist_ok=True)
    previous = last_rows(read_rows(jsonl)) if resume else {}
    final: dict[str, dict[str, Any]] = {}
    todo: list[tuple[Cell, int]] = []
    skipped = 0
    for cell in spec.cells:
        old = previous.get(cell.cell_id)
        if old and old.get("status") == "ok" and old.get("key") == keys[cell.cell_id]:
            final[cell.cell_id] = old
            skipped += 1
        else:
            todo.append((cell, 1))
    runner = (RayEngine(jobs, address, num_cpus=jobs and jobs * max(c.threads for c in spec.cells))
              if engine == "ray" else LocalEngine(jobs or 1))
    report = MatrixReport(matrix=str(spec.path), output=str(out), engine=engine, skipped=skipped)
    progress = _Progress(len(todo))
    if isinstance(runner, RayEngine):
        missing = runner.check_resources([c.to_dict() for c, _ in todo])
        if missing:
            print(f"medge: WARNING: no Ray node declares {', '.join(missing)}; those device-bound cells wait for one "
                  "(ray start --resources '{\"TARGET\": 1}' on the device) until their timeout", file=sys.stderr)
    running: list[Running] = []

    def record(cell: Cell, attempt: int, result: dict[str, Any], started: float) -> None:
        row = {"cell": cell.cell_id, "key": keys[cell.cell_id], **cell.axes(), "attempt": attempt,
               "attempts": cell.retries + 1, "engine": engine, "started": started, "finished": _now(), **result}
        append_row(jsonl, row)
        final[cell.cell_id] = row

    try:
        for cell, _ in list(todo):
            why = _precheck(cell)
            if why:
                todo.remove((cell, 1))
                record(cell, 1, {"status": "unsupported", "error": why, "seconds": 0.0}, _now())
                progress.done += 1
        while todo or running:
            while todo and len(running) < runner.jobs:
                cell, attempt = todo.pop(0)
                cell_dir = out / "cells" / cell.cell_id
                now = time.monotonic()
                run = Running(cell.to_dict(), cell_dir, attempt, now, now + cell.timeout_s)
                run.extra["started"] = _now()
                runner.start(run)
                running.append(run)
                progress.line(len(running), f"{cell.cell_id}: started (attempt {attempt})")
            for run, result in runner.poll(running, 0.5):
                running.remove(run)
                cell = _cell_of(spec, run.cell)
                result["wall_s"] = round(time.monotonic() - run.started, 3)  # the driver's view: queue + start + cell
                result.setdefault("seconds", result["wall_s"])
                record(cell, run.attempt, result, run.extra["started"])
                status = result["status"]
                if status in RETRIED and run.attempt <= cell.retries:
                    todo.append((cell, run.attempt + 1))
                    progress.line(len(running), f"{cell.cell_id}: {status}, retrying ({run.attempt + 1}/{cell.retries + 1})")
                    continue
                progress.done += 1
                progress.durations.append(result["seconds"])
                progress.failed += status in FAILED
                progress.line(len(running), f"{cell.cell_id}: {status} in {result['seconds']:.1f} s"
                                            + (f" ({result.get('error', '')[:160]})" if status != "ok" else ""))
    except KeyboardInterrupt:
        for run in running:
            runner.stop(run)
            record(_cell_of(spec, run.cell), run.attempt, {"status": "interrupted", "error": "stopped by Ctrl-C",
                                                           "seconds": round(time.monotonic() - run.started, 3)},
                   run.extra["started"])
        _finish(report, spec, final, out, t0)
        runner.close()
        print(report.to_table())
        raise
    runner.close()
    return _finish(report, spec, final, out, t0)


def _cell_of(spec: MatrixSpec, data: dict[str, Any]) -> Cell:
    return next(c for c in spec.cells if c.to_dict() == data)


def _finish(report: MatrixReport, spec: MatrixSpec, final: dict[str, dict[str, Any]], out: Path, t0: float) -> MatrixReport:
    report.rows = [final[c.cell_id] for c in spec.cells if c.cell_id in final]
    counts: dict[str, int] = {}
    for row in report.rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    report.counts = counts
    report.seconds = round(time.monotonic() - t0, 3)
    summary = {"matrix": report.matrix, "engine": report.engine, "counts": counts, "skipped": report.skipped,
               "seconds": report.seconds}
    try:
        report.files = write_tables(out, report.rows, summary)
    except OSError as exc:
        raise MedgeError(f"cannot write the result tables in {out}: {exc.strerror or exc}") from exc
    return report
