"""`medge profile BUNDLE… --farm FARM.yaml`: every bundle on every matching device at once.

Each run is a real `medge profile --device ssh://…` child process holding the device's lease, with
the device's timeout.  A device that fails or times out is marked unhealthy; its job (and the jobs
still waiting for it) move to another healthy device of the same target.  Every attempt is a row.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from medge.common.errors import UsageError
from medge.common.fileio import atomic_path, write_json_atomic
from medge.common.reports import Report
from medge.scale.cell import end_group, medge_cli
from medge.scale.farm import Farm, FarmDevice, Lease, note_seen

DEVICE_FAULTS = ("cannot reach", "ssh", "connection", "timed out", "not installed on", "lost")
COLUMNS = ("bundle", "device", "target", "status", "p50 ms", "p90 ms", "p99 ms", "p50 95% CI", "per s", "peak MB", "note")


@dataclass
class Job:
    """One bundle to profile on one device (`device` None: any healthy device of `target`)."""

    bundle: Path
    target: str
    device: str | None
    tried: set[str] = field(default_factory=set)
    moved_from: str | None = None
    timeout_s: float | None = None  # this job's own limit (a matrix cell's timeout), capped by the device's
    report_dir: Path | None = None  # where its reports go (default: the scheduler's folder)
    args: tuple[str, ...] = ()  # `medge profile` flags of this job, after the scheduler's own
    cell: str | None = None  # the matrix cell this job profiles


@dataclass
class FarmProfileReport(Report):
    """Bundle × device: latency percentiles with CI, throughput, peak memory, status; every attempt a row."""

    title: ClassVar[str] = "medge profile --farm"
    farm: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    unhealthy: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r["status"] == "ok" for r in self.rows)

    def to_table(self) -> str:
        def num(v: Any) -> str:
            return f"{v:.3f}" if isinstance(v, (int, float)) else "-"

        body = []
        for r in self.rows:
            ci = r.get("p50_ci95") or []
            body.append([r["bundle"], r["device"], r["target"], r["status"], num(r.get("p50_ms")), num(r.get("p90_ms")),
                         num(r.get("p99_ms")), f"{ci[0]:.3f}…{ci[1]:.3f}" if len(ci) == 2 else "-",
                         f"{r['throughput']:.0f}" if r.get("throughput") else "-",
                         f"{r['peak_mb']:.0f}" if r.get("peak_mb") else "-", r.get("note", "")[:90]])
        widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
        line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
        tail = [f"unhealthy devices: {', '.join(self.unhealthy) or 'none'}; {len(self.rows)} rows in {self.seconds:.1f} s; "
                f"{self.files.get('json', '')} (+ png)"]
        return "\n".join([line(COLUMNS), line(["-" * w for w in widths]), *(line(b) for b in body), "", *tail])


def bundle_target(path: Path) -> str | None:
    """The target recorded in a bundle's manifest (None for a plain model file)."""
    try:
        return json.loads((path / "manifest.json").read_text())["target"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plan_jobs(bundles: list[Path], farm: Farm, target: str | None, per_target: int | None) -> list[Job]:
    """The jobs: each bundle on every matching device, or on `per_target` devices of its target."""
    jobs: list[Job] = []
    for bundle in bundles:
        if not bundle.exists():
            raise UsageError(f"bundle not found: {bundle}")
        t = target or bundle_target(bundle)
        if t is None:
            raise UsageError(f"{bundle} is not a bundle (no manifest.json target); give --target T for a model file")
        devices = [d for d in farm.devices if d.target == t and d.address]
        if not devices:
            known = sorted({d.target for d in farm.devices})
            raise UsageError(f"no SSH device of target '{t}' in {farm.path} (its targets: {', '.join(known)}); "
                             "add one or pick --target")
        if per_target:
            jobs += [Job(bundle, t, None) for _ in range(min(per_target, len(devices)))]
        else:
            jobs += [Job(bundle, t, d.name) for d in devices]
    return jobs


def _row(job: Job, device: FarmDevice, status: str, report: dict[str, Any], note: str, seconds: float) -> dict[str, Any]:
    lat = report.get("latency_ms") or {}
    return {"bundle": job.bundle.name, "bundle_path": str(job.bundle), "device": device.name, "address": device.address,
            "target": job.target, "status": status, "p50_ms": lat.get("p50"), "p90_ms": lat.get("p90"),
            "p99_ms": lat.get("p99"), "p50_ci95": report.get("median_ci95"), "throughput": report.get("throughput_per_s"),
            "peak_mb": report.get("peak_rss_mb"), "moved_from": job.moved_from, "note": note, "seconds": round(seconds, 2)}


class FarmScheduler:
    """Leases devices and runs profile jobs on them: one job per device at a time; a device that fails or times
    out is marked unhealthy and its jobs go to another healthy device of the same target.

    `run()` works through every job; `add()` + `step()` let a caller (the matrix driver) feed jobs and
    collect finished rows as it goes.  Every row is kept in `rows`.
    """

    def __init__(self, farm: Farm, jobs: list[Job], out: Path, profile_args: list[str], timeout_s: float | None) -> None:
        self.farm, self.pending, self.out, self.profile_args = farm, jobs, out, profile_args
        self.timeout_s = timeout_s
        self.devices = {d.name: d for d in farm.devices if d.address}
        self.unhealthy: list[str] = []
        self.running: dict[str, tuple[Job, subprocess.Popen, Lease, float, Path]] = {}
        self.rows: list[dict[str, Any]] = []
        self.started = dict.fromkeys(self.devices, 0)
        self._events: list[tuple[Job, dict[str, Any]]] = []

    @property
    def busy(self) -> bool:
        """Jobs are waiting or running."""
        return bool(self.pending or self.running)

    def add(self, job: Job) -> None:
        """Queue a job (started by a later `step`)."""
        self.pending.append(job)

    def _pick(self, device: FarmDevice) -> Job | None:
        for job in self.pending:
            if job.device == device.name or (job.device is None and job.target == device.target
                                             and device.name not in job.tried):
                return job
        return None

    def _start(self) -> None:
        for name, device in sorted(self.devices.items(), key=lambda item: self.started[item[0]]):  # spread the work
            if name in self.running or name in self.unhealthy:
                continue
            job = self._pick(device)
            if job is None:
                continue
            lease = Lease(self.farm, device)
            if not lease.acquire(f"medge profile --farm {self.farm.path}"):
                continue  # another medge process holds it; try again on the next round
            self.pending.remove(job)
            job.device = name
            job.tried.add(name)
            self.started[name] += 1
            folder = job.report_dir or self.out
            folder.mkdir(parents=True, exist_ok=True)
            report = folder / f"{job.bundle.name}__{name}__{len(job.tried)}.json"
            report.unlink(missing_ok=True)
            argv = [*medge_cli(), "profile", str(job.bundle), "--device", device.address, *device.ssh_args(),
                    *self.profile_args, *job.args, "--report", str(report)]
            with open(report.with_suffix(".log"), "w") as log:  # a file, never a pipe that could fill up
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                        start_new_session=True)
            self.running[name] = (job, proc, lease, time.monotonic(), report)
            what = job.cell or job.bundle.name
            print(f"medge: farm: {what} on {name} ({device.address})", file=sys.stderr, flush=True)

    def _limit(self, job: Job, device: FarmDevice) -> tuple[float, bool]:
        """The job's time limit on `device`, and whether it is the device's (else the job's own, e.g. a matrix cell's)."""
        device_limit = self.timeout_s or device.timeout_s
        if job.timeout_s and job.timeout_s < device_limit:
            return job.timeout_s, False
        return device_limit, True

    def _finish(self, name: str, status: str, note: str, device_fault: bool = False) -> None:
        job, proc, lease, t0, report_path = self.running.pop(name)
        lease.release()
        device = self.devices[name]
        try:
            report = json.loads(report_path.read_text())
        except (OSError, ValueError):
            report = {}
        if status == "ok" and proc.returncode != 0:
            status = "failed"
            log = report_path.with_suffix(".log").read_text(errors="replace").strip().splitlines()
            note = report.get("error") or (log[-1][-300:] if log else f"exit {proc.returncode}")
        row = _row(job, device, status, report if status == "ok" else {}, note, time.monotonic() - t0)
        row["report"] = str(report_path)
        row["device_fault"] = device_fault or (status == "failed" and any(w in note.lower() for w in DEVICE_FAULTS))
        self.rows.append(row)
        self._events.append((job, row))
        if status == "ok":
            note_seen(self.farm, device)
            return
        if row["device_fault"]:
            self.unhealthy.append(name)
            moved = [job] + [j for j in self.pending if j.device == name]
            for j in moved:
                j.device, j.moved_from = None, name
                if j is job:
                    self.pending.append(j)

    def _give_up(self) -> None:
        """Jobs no healthy device can take become no_device rows."""
        for job in list(self.pending):
            candidates = [d for d in self.devices.values() if d.target == job.target and d.name not in self.unhealthy
                          and (job.device == d.name or (job.device is None and d.name not in job.tried))]
            if not candidates:
                self.pending.remove(job)
                tried = f" (tried {', '.join(sorted(job.tried))})" if job.tried else ""
                row = {"bundle": job.bundle.name, "bundle_path": str(job.bundle), "device": "-", "address": None,
                       "target": job.target, "status": "no_device", "moved_from": job.moved_from,
                       "note": f"no healthy device of {job.target} left to take it{tried}", "seconds": 0.0}
                self.rows.append(row)
                self._events.append((job, row))

    def step(self) -> list[tuple[Job, dict[str, Any]]]:
        """One round: give up on jobs no device can take, start jobs on free devices, collect the finished and
        timed-out ones.  Returns the (job, row) pairs of this round; a job that is moved stays queued."""
        self._give_up()
        self._start()
        for name, (job, proc, _lease, t0, _report) in list(self.running.items()):
            limit, the_devices = self._limit(job, self.devices[name])
            if proc.poll() is not None:
                self._finish(name, "ok", f"redo of {job.moved_from}'s job" if job.moved_from else "")
            elif time.monotonic() - t0 > limit:
                end_group(proc)
                whose = "device timeout" if the_devices else "the job's own timeout"
                self._finish(name, "timeout", f"no result after {limit:g} s ({whose})", device_fault=the_devices)
        events, self._events = self._events, []
        return events

    def run(self) -> None:
        """Work through every job."""
        while self.busy:
            self.step()
            time.sleep(0.2)

    def stop_all(self) -> list[tuple[Job, dict[str, Any]]]:
        """End the running jobs (their rows say interrupted); returns those (job, row) pairs."""
        for name in list(self.running):
            end_group(self.running[name][1])
            self._finish(name, "interrupted", "stopped by Ctrl-C")
        events, self._events = self._events, []
        return events


def _chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok" and r.get("p50_ms")]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(ok) + 2), 4))
    labels = [f"{r['bundle']}\n{r['device']}" for r in ok]
    p50 = [r["p50_ms"] for r in ok]
    err = [[r["p50_ms"] - (r.get("p50_ci95") or [r["p50_ms"]] * 2)[0] for r in ok],
           [(r.get("p50_ci95") or [r["p50_ms"]] * 2)[1] - r["p50_ms"] for r in ok]]
    ax.bar(range(len(ok)), p50, yerr=err, capsize=3, color="#4477aa", label="p50 (95% CI)")
    ax.scatter(range(len(ok)), [r.get("p99_ms") or 0 for r in ok], color="#cc6677", zorder=3, label="p99")
    ax.set_xticks(range(len(ok)), labels, fontsize=7)
    ax.set_ylabel("latency (ms)")
    ax.set_title("latency per device")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def profile_on_farm(bundles: list[str], farm: Farm, out: Path, *, target: str | None = None,
                    per_target: int | None = None, profile_args: list[str] | None = None,
                    timeout_s: float | None = None) -> FarmProfileReport:
    """Profile every bundle on the farm's matching devices at once; writes OUT/farm_profile.json and .png."""
    t0 = time.monotonic()
    jobs = plan_jobs([Path(b) for b in bundles], farm, target, per_target)
    out.mkdir(parents=True, exist_ok=True)
    scheduler = FarmScheduler(farm, jobs, out, profile_args or [], timeout_s)
    report = FarmProfileReport(farm=str(farm.path))
    try:
        scheduler.run()
    except KeyboardInterrupt:
        scheduler.stop_all()
        raise
    finally:
        report.rows, report.unhealthy = scheduler.rows, scheduler.unhealthy
        report.seconds = round(time.monotonic() - t0, 2)
        report.files = {"json": str(out / "farm_profile.json"), "chart": str(out / "farm_latency.png")}
        write_json_atomic(out / "farm_profile.json", report.to_dict())
        _chart(report.rows, out / "farm_latency.png")
    return report
