"""Where cells run: `LocalEngine` (child processes, N at a time) and `RayEngine` (one Ray task per cell).

Both start each cell in a fresh process (``python -m medge.scale.cell``), enforce the per-cell
timeout from the driver and end a running cell on request (timeout, Ctrl-C).
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medge.common.errors import MedgeError, MissingDependencyError
from medge.scale.cell import end_group, finished_result, run_cell_blocking, start_cell

RAY_GRACE_S = 30.0  # a Ray task ends its own cell at the timeout; the driver cancels it after this much more


@dataclass
class Running:
    """A started cell: what the engine needs to poll, time out and end it."""

    cell: dict[str, Any]
    cell_dir: Path
    attempt: int
    started: float
    deadline: float
    handle: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class LocalEngine:
    """Cells as child processes of this driver, `jobs` at a time."""

    name = "local"

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.host = socket.gethostname()

    def start(self, run: Running) -> None:
        """Start the cell's process."""
        run.handle = start_cell(run.cell, run.cell_dir)

    def poll(self, running: list[Running], wait_s: float) -> list[tuple[Running, dict[str, Any]]]:
        """The cells that finished or timed out since the last call, with their results."""
        deadline = time.monotonic() + wait_s
        while True:
            done = []
            for run in running:
                proc: subprocess.Popen = run.handle
                code = proc.poll()
                if code is not None:
                    done.append((run, finished_result(run.cell_dir, code)))
                elif time.monotonic() > run.deadline:
                    end_group(proc)
                    done.append((run, {"status": "timeout",
                                       "error": f"no result after {run.cell['timeout_s']:g} s (timeout)"}))
            if done or time.monotonic() >= deadline:
                for run, result in done:
                    result.setdefault("host", self.host)
                    result.setdefault("node", "local")
                return done
            time.sleep(0.1)

    def stop(self, run: Running) -> None:
        """End a running cell and its builds."""
        end_group(run.handle)

    def close(self) -> None:
        """Nothing to release."""


def _ray_cell(cell: dict[str, Any], cell_dir: str, timeout_s: float) -> dict[str, Any]:
    """The Ray task: run the cell in a fresh process on this node; tag the result with the node."""
    import ray

    result = run_cell_blocking(cell, Path(cell_dir), timeout_s)
    result["node"] = ray.get_runtime_context().get_node_id()[:12]
    result["host"] = socket.gethostname()
    return result


class RayEngine:
    """Every cell a Ray task (`num_cpus` = its threads; a device-bound cell not on the farm also asks for {target: 1})."""

    name = "ray"

    def __init__(self, jobs: int | None, address: str | None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise MissingDependencyError("ray", "ray", what="--engine ray") from exc
        self.ray = ray
        self.embedded = address is None
        try:
            if address is None:
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                         configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR", configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "an embedded Ray"
            raise MedgeError(f"cannot start {where}: {str(exc).splitlines()[0]}; check --address "
                             "(ray start --head prints it) or run with --engine local") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.jobs = jobs or max(1, cpus)
        self.remote = ray.remote(max_retries=0)(_ray_cell)
        self.resources = dict(ray.cluster_resources())

    def check_resources(self, cells: list[dict[str, Any]]) -> list[str]:
        """Device resources the cells ask for that no node of the cluster declares (those cells cannot run)."""
        return sorted({c["target"] for c in cells if c.get("device_bound") and not c.get("on_farm")
                       and c["target"] not in self.resources})

    def start(self, run: Running) -> None:
        """Submit the cell as a Ray task."""
        cell = run.cell
        resources = {cell["target"]: 1} if cell.get("device_bound") and not cell.get("on_farm") else {}
        run.handle = self.remote.options(num_cpus=cell["threads"], resources=resources).remote(
            cell, str(run.cell_dir.resolve()), cell["timeout_s"])
        run.deadline += RAY_GRACE_S

    def poll(self, running: list[Running], wait_s: float) -> list[tuple[Running, dict[str, Any]]]:
        """Finished tasks with their results; a task past its deadline is cancelled (force) and timed out."""
        ray = self.ray
        by_ref = {run.handle: run for run in running}
        ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=wait_s) if by_ref else ([], [])
        done = []
        for ref in ready:
            try:
                done.append((by_ref[ref], ray.get(ref)))
            except ray.exceptions.RayError as exc:
                done.append((by_ref[ref], {"status": "build_failed", "error": f"Ray task failed: {str(exc).splitlines()[0]}"}))
        finished = {id(r) for r, _ in done}
        for run in running:
            if id(run) not in finished and time.monotonic() > run.deadline:
                ray.cancel(run.handle, force=True)
                done.append((run, {"status": "timeout", "error": f"no result after {run.cell['timeout_s']:g} s "
                                                                 f"(+{RAY_GRACE_S:g} s grace; cancelled by the driver)"}))
        return done

    def stop(self, run: Running) -> None:
        """Cancel a task (force: its worker and the cell's processes end)."""
        self.ray.cancel(run.handle, force=True)

    def close(self) -> None:
        """Leave the cluster (an embedded Ray shuts down)."""
        self.ray.shutdown()
