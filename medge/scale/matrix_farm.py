"""`medge matrix run … --farm FARM.yaml`: the on-device step of the cells whose target has SSH devices in the farm.

The host builds the cell's bundle (its engine slot is then free for the next build); the driver hands the
bundle to `FarmScheduler` (leases, one job per device, unhealthy devices, work moved to a healthy device of
the same target) and turns each of its rows into a matrix result: ok (the device's latency, the device's name
in `node`), device_error (an attempt on a device that failed or passed the farm's timeout, or no healthy device
left; never trusted by --resume), timeout (the cell's own timeout, applied to the device step as to the host
step, passed first) or build_failed (the bundle itself failed on a healthy device).  The step runs in the
driver with either engine: the leases are files beside FARM.yaml on the driver's host, the SSH keys are
there, and a device step is an ssh child process, not worth a Ray worker's CPU while it waits for a device.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medge.scale.engines import Running
from medge.scale.farm import Farm
from medge.scale.farm_profile import FarmScheduler, Job
from medge.scale.spec import Cell


def farm_targets(farm: Farm) -> set[str]:
    """The targets that have at least one SSH device in the farm (Ray-resource devices run their own cells)."""
    return {d.target for d in farm.devices if d.address}


def no_device_reason(cell: Cell, farm: Farm, ray_has_it: bool) -> str | None:
    """Why a cell cannot run with this farm (None: it can, on the host or on a Ray node that declares its target)."""
    if cell.on_farm or not cell.device_bound or ray_has_it:
        return None
    return (f"no SSH device of target '{cell.target}' in {farm.path} and the host cannot profile it; add one "
            f"(name, target: {cell.target}, address: ssh://user@host) or run with --engine ray on a node declaring it")


@dataclass
class _Waiting:
    run: Running
    cell: Cell
    host: dict[str, Any]  # the host step's result (build/compile, no on-device latency)


class FarmStage:
    """Matrix cells waiting for, or running on, a farm device."""

    def __init__(self, farm: Farm, out: Path) -> None:
        self.farm = farm
        self.scheduler = FarmScheduler(farm, [], out / "farm", [], None)
        self.waiting: dict[str, _Waiting] = {}

    @property
    def active(self) -> int:
        """Cells in the farm step (queued or on a device)."""
        return len(self.waiting)

    @property
    def unhealthy(self) -> list[str]:
        """Devices marked unhealthy in this run."""
        return list(self.scheduler.unhealthy)

    def submit(self, run: Running, cell: Cell, host: dict[str, Any]) -> dict[str, Any] | None:
        """Queue the built cell's bundle for a device of its target; a result right away when there is no bundle."""
        bundle = run.cell_dir / "bundle"
        if not (bundle / "manifest.json").exists():
            return {**host, "status": "build_failed",
                    "error": f"the cell's bundle is not on the driver ({bundle}); with --farm and a Ray cluster, "
                             "-o must be a folder every node shares (e.g. NFS)"}
        self.waiting[cell.cell_id] = _Waiting(run, cell, host)
        self.scheduler.add(Job(bundle, cell.target, None, timeout_s=cell.timeout_s, report_dir=run.cell_dir,
                               cell=cell.cell_id, args=("--runs", str(cell.runs), "--warmup", str(cell.warmup),
                                                        "--threads", str(cell.threads), "--layers", "0")))
        return None

    def poll(self) -> list[tuple[Running, Cell, dict[str, Any], bool]]:
        """Rows of this round: (run, cell, result, final); a non-final row is a failed device whose work moved on."""
        return [self._result(job, row) for job, row in self.scheduler.step()]

    def stop_all(self) -> list[tuple[Running, Cell, dict[str, Any]]]:
        """End the device steps (Ctrl-C): every waiting cell's result says interrupted."""
        self.scheduler.stop_all()
        stopped = [(w.run, w.cell, {**w.host, "status": "interrupted", "error": "stopped by Ctrl-C"})
                   for w in self.waiting.values()]
        self.waiting.clear()
        return stopped

    def _result(self, job: Job, row: dict[str, Any]) -> tuple[Running, Cell, dict[str, Any], bool]:
        waiting = self.waiting[job.cell or ""]
        host = waiting.host
        result = copy.deepcopy(host)
        result.update(node=row["device"], build_node=host.get("node"), device_address=row.get("address"),
                      device_report=row.get("report"), moved_from=row.get("moved_from"))
        status, device = row["status"], row["device"]
        if status == "ok":
            result.update(status="ok", p50_ms=row["p50_ms"], p99_ms=row["p99_ms"], p90_ms=row["p90_ms"],
                          p50_ci95=row.get("p50_ci95"), throughput=row.get("throughput"), peak_mb=row.get("peak_mb"),
                          latency_ratio=None)  # the fp32 reference was timed on the host, not on this device
        elif status == "interrupted":
            result.update(status="interrupted", error="stopped by Ctrl-C")
        elif row.get("device_fault"):
            result.update(status="device_error", host_step=host,
                          error=f"{device}: {row['note'][:300]}; its work moves to another device of {job.target}")
        elif status == "timeout":  # the cell's own timeout, shorter than the device's: the cell's fault
            result.update(status="timeout", error=f"on-device profile on {device}: {row['note']}")
        elif status == "no_device":
            result.update(status="device_error", host_step=host, error=row["note"])
        else:
            result.update(status="build_failed", error=f"on-device profile on {device} failed: {row['note'][:300]}")
        result.setdefault("steps", {})
        if device != "-":
            result["steps"] = {**(result["steps"] or {}), f"profile on {device}": row["seconds"]}
        result["seconds"] = round((host.get("seconds") or 0.0) + row["seconds"], 3)
        final = not row.get("device_fault")  # a failed device's job is queued again (or given up: no_device)
        if final:
            del self.waiting[job.cell or ""]
        return waiting.run, waiting.cell, result, final


def resumable_host_step(old: dict[str, Any] | None, key: str, cell_dir: Path) -> dict[str, Any] | None:
    """The host step of a cell whose last row is a device_error with the same key and whose bundle is still
    there: --resume then redoes only the device step."""
    if not old or old.get("status") != "device_error" or old.get("key") != key or not old.get("host_step"):
        return None
    return old["host_step"] if (cell_dir / "bundle" / "manifest.json").exists() else None

