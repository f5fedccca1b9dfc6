"""The SR stage: writes each analysed study's SR after its flag is committed, off the critical path.

A worker commits the flag and priority (``sr_state`` ``pending``) and hands the study's SR header
(`source.sr_source`, no pixels) to this stage, which builds the SR, fsyncs it (outbox copy and
``--sr-dir``), and in one transaction marks it written and queues its deliveries.  The worklist,
not the hand-over, is the queue: the stage takes every ``pending`` row, so rows a kill left
between the flag and the SR are written on the next start (the header read back from the stored
instance), with the same SR UID (`sr.sr_uids`).  A failed write is retried with backoff, forever;
the study keeps its flag meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medge.apps.xray.audit import LOG, AuditLog
from medge.apps.xray.priority import OperatingPoints
from medge.apps.xray.source import sr_source
from medge.apps.xray.sr import Finding, sr_bytes
from medge.apps.xray.sr_writer import SRWriter
from medge.apps.xray.store import fsync_write
from medge.apps.xray.worklist import SRJob, Worklist

RETRY_START_S, RETRY_MAX_S = 0.5, 60.0


def findings_for(ops: OperatingPoints, scores: dict[str, float]) -> list[Finding]:
    """One `Finding` per operating point: score, threshold and whether it is present."""
    flags, _ = ops.evaluate(scores)
    return [Finding(name, scores[name], point.threshold, name in flags) for name, point in ops.points.items()]


def import_sr_modules() -> None:
    """Import highdicom and what the SR code imports lazily, once, before the threads start: a first
    import of highdicom racing in a worker (`source.sr_source`) and the SR thread can find a
    partially initialised module (ImportError)."""
    import highdicom._standard_utils  # noqa: F401
    import highdicom.base_content  # noqa: F401
    import highdicom.sr  # noqa: F401
    import highdicom.valuerep  # noqa: F401
    import pydicom.sr.codedict  # noqa: F401


class SRStage:
    """One thread writing the SRs of analysed studies (call `start`/`stop`, or `drain` offline)."""

    def __init__(self, worklist: Worklist, ops: OperatingPoints, audit: AuditLog, writer: SRWriter, *,
                 sr_outbox_dir: Path, sr_dir: Path | None, destinations: list[str],
                 on_written: Callable[[float], None] | None = None) -> None:
        import_sr_modules()
        self.worklist, self.ops, self.audit, self.writer = worklist, ops, audit, writer
        self.sr_outbox_dir, self.sr_dir = Path(sr_outbox_dir), sr_dir
        self.destinations = list(destinations)
        self.on_written = on_written
        self.written = 0
        self.failures = 0
        self._sources: dict[str, Any] = {}  # SOPInstanceUID -> SR header handed over by a worker
        self._retry_at: dict[str, tuple[float, int]] = {}  # SOPInstanceUID -> (monotonic due time, failures)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # --- hand-over from the workers --------------------------------------------------------
    def hand_over(self, sop_instance_uid: str, ds: Any) -> None:
        """Keep `ds`'s SR header for the study about to be committed (call before `commit_flag`)."""
        with self._lock:
            self._sources[sop_instance_uid] = sr_source(ds)

    def take_back(self, sop_instance_uid: str) -> None:
        """The commit failed: drop the header handed over."""
        with self._lock:
            self._sources.pop(sop_instance_uid, None)

    def wake(self) -> None:
        """A flag was committed: write its SR now rather than at the next poll."""
        self._wake.set()

    # --- lifecycle -------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Compile the SR templates of this operating point's layout before the first study."""
        try:
            self.writer.warm_up(findings_for(self.ops, {name: 0.0 for name in self.ops.points}))
        except Exception as exc:  # noqa: BLE001 - not fatal: the first SR of a layout compiles its template
            LOG.warning("SR warm-up failed (%s: %s); the first SR will take longer", type(exc).__name__, exc)

    def start(self) -> None:
        """Start writing in the background (rows left pending by a previous run first)."""
        self._thread = threading.Thread(target=self._loop, name="xray-sr", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current SR (what is pending stays pending, written on the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def drain(self) -> None:
        """Offline: try every pending SR once (a failed one stays pending for the next run)."""
        for job in self.worklist.sr_to_write(limit=1 << 30):
            self.write(job)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before reading the queue, so a commit during the read is not missed
            try:
                now = time.monotonic()
                due = [job for job in self.worklist.sr_to_write(limit=1024)
                       if self._retry_at.get(job.sop_instance_uid, (0.0, 0))[0] <= now]
                for job in due:
                    if self._stop.is_set():
                        return
                    self.write(job)
            except Exception as exc:  # noqa: BLE001 - the database was busy past its retries: poll again
                LOG.warning("SR stage: %s; retrying", exc)
                due = []
            if not due:
                self._wake.wait(0.25)

    # --- one SR ----------------------------------------------------------------------------
    def write(self, job: SRJob) -> bool:
        """Build, fsync and record the SR of one analysed study; False (retried later) when it failed."""
        t0 = time.perf_counter()
        with self._lock:
            source = self._sources.pop(job.sop_instance_uid, None)
        try:
            if source is None:  # left pending by a previous run: read the header back
                import pydicom

                source = sr_source(pydicom.dcmread(str(job.path), stop_before_pixels=True))
            sr = self.writer.build(source, findings_for(self.ops, job.scores))
            data = sr_bytes(sr)
            sr_path = self.sr_outbox_dir / f"{job.sop_hash}.dcm"
            fsync_write(sr_path, data)
            if self.sr_dir is not None:
                fsync_write(Path(self.sr_dir) / f"{job.sop_hash}.dcm", data)
        except Exception as exc:  # noqa: BLE001 - retried with backoff; the study keeps its flag
            self._failed(job, source, exc)
            return False
        sr_ms = round((time.perf_counter() - t0) * 1e3, 3)  # as the row stores it, so report and worklist agree
        self.worklist.finish_sr(job.sop_instance_uid, sr_sop_instance_uid=str(sr.SOPInstanceUID), sr_path=sr_path,
                                sr_ms=sr_ms, destinations=self.destinations)
        self._retry_at.pop(job.sop_instance_uid, None)
        self.written += 1
        self.audit.write("sr_written", sop_instance_uid_hash=job.sop_hash, study_hash=job.study_hash,
                         sr_ms=sr_ms, time_to_sr_s=round(time.time() - job.received_at, 4))
        if self.on_written is not None:
            self.on_written(sr_ms)
        return True

    def _failed(self, job: SRJob, source: Any, exc: Exception) -> None:
        failures = self._retry_at.get(job.sop_instance_uid, (0.0, 0))[1] + 1
        delay = min(RETRY_MAX_S, RETRY_START_S * 2 ** (failures - 1))
        self._retry_at[job.sop_instance_uid] = (time.monotonic() + delay, failures)
        if source is not None:
            with self._lock:
                self._sources.setdefault(job.sop_instance_uid, source)
        self.failures += 1
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        if failures == 1 or failures % 10 == 0:
            LOG.warning("study %s: SR not written (%s); retrying in %.1f s", job.sop_hash, error, delay)
        self.audit.write("sr_write_retry", sop_instance_uid_hash=job.sop_hash, error=error, retry_in_s=delay)
