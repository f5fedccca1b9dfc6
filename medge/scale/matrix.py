"""Drive a matrix: skip what `--resume` may trust, run the rest on an engine with timeouts and retries,
append one results.jsonl row per attempt, show progress, and write the result table."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from medge.common.errors import MedgeError, UsageError
from medge.common.reports import Report
from medge.scale.engines import LocalEngine, RayEngine, Running
from medge.scale.farm import Farm
from medge.scale.key import cell_key
from medge.scale.matrix_farm import FarmStage, farm_targets, no_device_reason, resumable_host_step
from medge.scale.results import append_row, last_rows, read_rows, render, write_tables
from medge.scale.spec import Cell, MatrixSpec
from medge.devices import TARGETS

RETRIED = ("build_failed", "timeout")  # a gate failure or an unsupported cell is an answer, not an accident
FAILED = ("gate_failed", "build_failed", "timeout", "interrupted", "device_error")


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
    farm: str | None = None
    unhealthy: list[str] = field(default_factory=list)  # farm devices that failed in this run

    @property
    def ok(self) -> bool:
        return not self.unhealthy and not any(row["status"] in FAILED for row in self.rows)

    def to_table(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        farm = f"\nfarm {self.farm}: unhealthy devices: {', '.join(self.unhealthy) or 'none'}" if self.farm else ""
        return (f"{render(self.rows)}\n\n{len(self.rows)} cells ({counts}; {self.skipped} resumed) in "
                f"{self.seconds:.1f} s with --engine {self.engine}; {self.files.get('markdown', '')} (+ json, png), "
                f"one row per attempt in {self.output}/results.jsonl{farm}")


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


def _precheck(cell: Cell, farm: Farm | None, ray_resources: dict[str, float] | None) -> str | None:
    target = TARGETS.get(cell.target)
    if cell.precision not in target.precisions:
        return f"target '{cell.target}' does not support {cell.precision}; supported: {', '.join(target.precisions)}"
    if farm is not None:
        return no_device_reason(cell, farm, bool(ray_resources and cell.target in ray_resources))
    return None


def run_matrix(spec: MatrixSpec, out: Path, *, engine: str = "local", jobs: int | None = None,
               address: str | None = None, resume: bool = False, farm: Farm | None = None) -> MatrixReport:
    """Run every cell of `spec` into `out`; with `farm`, cells of its targets are profiled on its devices.
    Returns the report (raises KeyboardInterrupt after a clean stop)."""
    t0 = time.monotonic()
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} is a file; give a folder for the matrix results")
    out = out.resolve()  # cells get absolute paths (their own processes, Ray workers)
    jsonl = out / "results.jsonl"
    if jsonl.exists() and not resume and read_rows(jsonl):
        raise UsageError(f"{out} already holds results; pass --resume to continue it or choose another -o folder")
    stage = None
    if farm is not None:
        on_farm = farm_targets(farm)
        spec = replace(spec, cells=[replace(c, on_farm=c.target in on_farm) for c in spec.cells])
        stage = FarmStage(farm, out)
    keys = {c.cell_id: cell_key(c) for c in spec.cells}  # may fail (a module that cannot be found): before any work
    out.mkdir(parents=True, exist_ok=True)
    previous = last_rows(read_rows(jsonl)) if resume else {}
    final: dict[str, dict[str, Any]] = {}
    todo: list[tuple[Cell, int]] = []
    built: list[tuple[Cell, dict[str, Any]]] = []  # --resume: cells that need only their device step again
    skipped = 0
    for cell in spec.cells:
        old = previous.get(cell.cell_id)
        host = resumable_host_step(old, keys[cell.cell_id], out / "cells" / cell.cell_id) if stage else None
        if old and old.get("status") == "ok" and old.get("key") == keys[cell.cell_id]:
            final[cell.cell_id] = old
            skipped += 1
        elif host is not None:
            built.append((cell, host))
        else:
            todo.append((cell, 1))
    runner = (RayEngine(jobs, address, num_cpus=jobs and jobs * max(c.threads for c in spec.cells))
              if engine == "ray" else LocalEngine(jobs or 1))
    report = MatrixReport(matrix=str(spec.path), output=str(out), engine=engine, skipped=skipped,
                          farm=str(farm.path) if farm else None)
    progress = _Progress(len(todo) + len(built))
    ray_resources = runner.resources if isinstance(runner, RayEngine) else None
    if isinstance(runner, RayEngine):
        missing = runner.check_resources([c.to_dict() for c, _ in todo if not _precheck(c, farm, ray_resources)])
        if missing:
            print(f"medge: WARNING: no Ray node declares {', '.join(missing)}; those device-bound cells wait for one "
                  "(ray start --resources '{\"TARGET\": 1}' on the device) until their timeout", file=sys.stderr)
    running: list[Running] = []

    def record(cell: Cell, attempt: int, result: dict[str, Any], started: float) -> None:
        row = {"cell": cell.cell_id, "key": keys[cell.cell_id], **cell.axes(), "attempt": attempt,
               "attempts": cell.retries + 1, "engine": engine, "started": started, "finished": _now(), **result}
        append_row(jsonl, row)
        final[cell.cell_id] = row

    def busy() -> int:
        return len(running) + (stage.active if stage else 0)

    def settle(run: Running, cell: Cell, result: dict[str, Any]) -> None:
        """A cell's attempt is over: its row, then a retry or the cell is done."""
        result["wall_s"] = round(time.monotonic() - run.started, 3)  # the driver's view: queue + start + cell
        result.setdefault("seconds", result["wall_s"])
        record(cell, run.attempt, result, run.extra["started"])
        status = result["status"]
        if status in RETRIED and run.attempt <= cell.retries:
            todo.append((cell, run.attempt + 1))
            progress.line(busy(), f"{cell.cell_id}: {status}, retrying ({run.attempt + 1}/{cell.retries + 1})")
            return
        progress.done += 1
        progress.durations.append(result["seconds"])
        progress.failed += status in FAILED
        progress.line(busy(), f"{cell.cell_id}: {status} in {result['seconds']:.1f} s"
                              + (f" ({result.get('error', '')[:160]})" if status != "ok" else ""))

    def to_farm(run: Running, cell: Cell, host: dict[str, Any]) -> None:
        early = stage.submit(run, cell, host)
        if early is not None:
            settle(run, cell, early)
        else:
            progress.line(busy(), f"{cell.cell_id}: built; waiting for a {cell.target} device of the farm")

    try:
        for cell, _ in list(todo):
            why = _precheck(cell, farm, ray_resources)
            if why:
                todo.remove((cell, 1))
                record(cell, 1, {"status": "unsupported", "error": why, "seconds": 0.0}, _now())
                progress.done += 1
        for cell, host in built:
            now = time.monotonic()
            run = Running(cell.to_dict(), out / "cells" / cell.cell_id, 1, now, now + cell.timeout_s,
                          extra={"started": _now(), "cell": cell})
            to_farm(run, cell, host)
        while todo or running or (stage and stage.active):
            while todo and len(running) < runner.jobs:
                cell, attempt = todo.pop(0)
                now = time.monotonic()
                run = Running(cell.to_dict(), out / "cells" / cell.cell_id, attempt, now, now + cell.timeout_s,
                              extra={"started": _now(), "cell": cell})
                runner.start(run)
                running.append(run)
                progress.line(busy(), f"{cell.cell_id}: started (attempt {attempt})")
            finished = runner.poll(running, 0.5) if running else []
            if not running:
                time.sleep(0.2)
            for run, result in finished:
                running.remove(run)
                cell = run.extra["cell"]
                if cell.on_farm and result["status"] == "ok":
                    result.setdefault("seconds", round(time.monotonic() - run.started, 3))  # the host step's
                    to_farm(run, cell, result)
                else:
                    settle(run, cell, result)
            for run, cell, result, done in stage.poll() if stage else []:
                if done:
                    settle(run, cell, result)
                else:
                    record(cell, run.attempt, result, run.extra["started"])
                    progress.line(busy(), f"{cell.cell_id}: device_error ({result['error'][:160]})")
    except KeyboardInterrupt:
        for run in running:
            runner.stop(run)
            record(run.extra["cell"], run.attempt, {"status": "interrupted", "error": "stopped by Ctrl-C",
                                                    "seconds": round(time.monotonic() - run.started, 3)},
                   run.extra["started"])
        for run, cell, result in stage.stop_all() if stage else []:
            record(cell, run.attempt, result, run.extra["started"])
        _finish(report, spec, final, out, t0, stage)
        runner.close()
        print(report.to_table())
        raise
    runner.close()
    return _finish(report, spec, final, out, t0, stage)


def _finish(report: MatrixReport, spec: MatrixSpec, final: dict[str, dict[str, Any]], out: Path, t0: float,
            stage: FarmStage | None = None) -> MatrixReport:
    report.rows = [final[c.cell_id] for c in spec.cells if c.cell_id in final]
    report.unhealthy = stage.unhealthy if stage else []
    counts: dict[str, int] = {}
    for row in report.rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    report.counts = counts
    report.seconds = round(time.monotonic() - t0, 3)
    summary = {"matrix": report.matrix, "engine": report.engine, "counts": counts, "skipped": report.skipped,
               "seconds": report.seconds, "farm": report.farm, "unhealthy": report.unhealthy}
    try:
        report.files = write_tables(out, report.rows, summary)
    except OSError as exc:
        raise MedgeError(f"cannot write the result tables in {out}: {exc.strerror or exc}") from exc
    return report
