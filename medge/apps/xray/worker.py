"""Workers: take the most urgent, oldest study off the SQLite queue, classify it, flag it.

Each of N threads claims jobs atomically (``UPDATE … RETURNING``), decodes and preprocesses the images
in parallel with the others (one decodes the next studies while another runs the model), and runs the
single shared runtime under a lock. When studies wait and the bundle takes a batch, a worker claims its
share of the queue (up to the model's batch, 8) and runs them in one inference. The flag and priority
are committed as soon as the scores are known; the SR is written afterwards by the SR stage
(`medge.apps.xray.sr_stage`), so time-to-flag does not include it. A crash before the commit leaves the
study ``running`` (requeued on the next start); after it, the SR is ``pending`` (written on the next
start).

A study that is not analysable, or whose analysis raises, is finished as ``not_analysed`` with the
reason and stays on the list at its priority; the error is one log line and one audit event.  A
study whose analysis was interrupted by a kill or crash is retried (behind untried studies).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medge.apps.xray.audit import LOG, AuditLog
from medge.apps.xray.classifier import (
    Classifier,
    NotAnalysable,
    check_analysable,
    preprocess,
    read_study,
)
from medge.apps.xray.priority import OVERDUE, OperatingPoints
from medge.apps.xray.sr_stage import SRStage
from medge.apps.xray.sr_writer import SRWriter
from medge.apps.xray.worklist import Job, Worklist
from medge.evaluate.statistics import latency_summary


@dataclass
class WorkerStats:
    """Counts since start."""

    analysed: int = 0
    not_analysed: int = 0
    errors: int = 0
    overdue: int = 0
    time_to_flag_s: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)  # per analysed study, by STAGES name

    def add_stages(self, timings: dict[str, float]) -> None:
        """Record one analysed study's per-stage timings (call under the pool's lock)."""
        for name in STAGES:
            if name in timings:
                self.stages_ms.setdefault(name, []).append(float(timings[name]))


# The stages of one study, in order: C-STORE handler (or file read) to bytes and header in hand,
# file write + fsyncs, waiting in the queue, pixel decode (reduced), VOI/resize/normalise, the
# model, then (after the flag is committed, by the SR stage) the SR, built and fsynced.
STAGES = ("receive_ms", "store_ms", "queue_ms", "decode_ms", "preprocess_ms", "infer_ms", "sr_ms")


def stage_summary(values: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """p50/p95/max/mean (ms) and count per stage, in `STAGES` order (stages without values left out)."""
    out = {}
    for name in STAGES:
        if values.get(name):
            summary = latency_summary(values[name])
            out[name] = {k: round(summary[k], 3) for k in ("p50", "p95", "max", "mean")} | {"n": summary["count"]}
    return out


@dataclass
class _Prepared:
    """A claimed study read and preprocessed, waiting for the model."""

    job: Job
    ds: Any
    x: np.ndarray
    timings: dict[str, float]
    t0: float


class WorkerPool:
    """N analysis threads over the worklist queue (call `start`/`stop`, or `drain` offline)."""

    def __init__(self, worklist: Worklist, classifier: Classifier, ops: OperatingPoints, audit: AuditLog, *,
                 sr_outbox_dir: Path, sr_dir: Path | None, destinations: list[str], workers: int = 2,
                 max_wait_s: float = 1800.0, on_result=None, reduced_decode: bool = True) -> None:
        self.worklist, self.classifier, self.ops, self.audit = worklist, classifier, ops, audit
        sr_outbox_dir, sr_dir = Path(sr_outbox_dir), Path(sr_dir) if sr_dir else None
        for folder in (sr_outbox_dir, sr_dir):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
        self.n_workers = max(1, int(workers))
        self.max_wait_s = max_wait_s
        self.on_result = on_result
        self.reduced_decode = reduced_decode
        self.stats = WorkerStats()
        self.sr_writer = SRWriter(model_name=classifier.name, model_sha256=classifier.sha256, ops_version=ops.version)
        self.sr_stage = SRStage(worklist, ops, audit, self.sr_writer, sr_outbox_dir=sr_outbox_dir, sr_dir=sr_dir,
                                destinations=destinations, on_written=self._sr_written)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Run the model once and compile the SR templates, so that the first studies after a start
        take no longer than the others."""
        self.classifier.warm_up()
        self.sr_stage.warm_up()

    def start(self) -> None:
        """Start the worker threads, the SR stage and the overdue sweep."""
        self.sr_stage.start()
        for i in range(self.n_workers):
            t = threading.Thread(target=self._loop, name=f"xray-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        sweep = threading.Thread(target=self._sweep_loop, name="xray-overdue", daemon=True)
        sweep.start()
        self._threads.append(sweep)

    def wake(self) -> None:
        """A new study arrived: wake an idle worker now rather than at its next poll."""
        self._wake.set()

    def stop(self, timeout: float = 60.0) -> None:
        """Let running jobs finish, then stop (a job still running after `timeout` is requeued on start)."""
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        self.sr_stage.stop()
        self.sr_stage.drain()  # the SRs of the last flags (one try each; a failed one is written next start)

    def drain(self) -> None:
        """Offline: analyse everything queued with `n_workers` threads, then write the SRs."""
        threads = [threading.Thread(target=self._drain_loop, daemon=True) for _ in range(self.n_workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.sr_stage.drain()

    # --- loops -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before claiming, so an arrival during the claim is not missed
            jobs = self.worklist.claim_many(self._batch_size())
            if not jobs:
                self._wake.wait(0.25)
                continue
            self.process_many(jobs)

    def _drain_loop(self) -> None:
        while jobs := self.worklist.claim_many(self._batch_size()):
            self.process_many(jobs)

    def _batch_size(self) -> int:
        """Studies to claim at once: this worker's share of the queue, up to the model's batch."""
        if self.classifier.max_batch == 1:
            return 1
        share = -(-self.worklist.queued_count() // self.n_workers)
        return max(1, min(self.classifier.max_batch, share))

    def _sweep_loop(self) -> None:
        while not self._stop.wait(min(5.0, max(0.05, self.max_wait_s / 10))):
            self.sweep_overdue()

    def sweep_overdue(self) -> None:
        """Flag studies waiting longer than max-wait as overdue (priority goes up, never down)."""
        for sop_hash in self.worklist.mark_overdue(self.max_wait_s, OVERDUE):
            with self._lock:
                self.stats.overdue += 1
            LOG.warning("study %s overdue: not analysed within %.0f s", sop_hash, self.max_wait_s)
            self.audit.write("overdue", sop_instance_uid_hash=sop_hash, max_wait_s=self.max_wait_s)

    # --- jobs --------------------------------------------------------------------------------
    def process(self, job: Job) -> None:
        """Analyse one claimed study and record the outcome (never raises)."""
        self.process_many([job])

    def process_many(self, jobs: list[Job]) -> None:
        """Analyse claimed studies (most urgent first): each is read and preprocessed, then all that
        can be analysed go through the model in one batch; every outcome is recorded (never raises)."""
        prepared = [p for p in map(self._prepare, jobs) if p is not None]
        if not prepared:
            return
        t1 = time.perf_counter()
        try:
            all_scores = self.classifier.scores_batch([p.x for p in prepared])
        except Exception as exc:  # noqa: BLE001 - one bad batch must never stop the worker
            for p in prepared:
                self._error(p.job, exc, p.timings)
            return
        infer_ms = (time.perf_counter() - t1) * 1e3
        for p, scores in zip(prepared, all_scores):
            p.timings["infer_ms"] = infer_ms  # the batch's: each study waited for all of it
            p.timings["batch"] = len(prepared)
            try:
                self._analysed(p.job, p.ds, scores, p.timings, p.t0)
            except Exception as exc:  # noqa: BLE001
                self._error(p.job, exc, p.timings)

    def _prepare(self, job: Job) -> _Prepared | None:
        """Read and preprocess one study; None (with the outcome recorded) when it cannot be analysed."""
        t0 = time.perf_counter()
        if job.attempts > 1:  # claimed before, by a process that was killed or crashed
            LOG.warning("study %s: retrying an interrupted analysis (attempt %d)", job.sop_hash, job.attempts)
        timings: dict[str, float] = {**job.timings, "queue_ms": max(0.0, time.time() - job.received_at) * 1e3}
        try:
            ds = read_study(job.path)
            read_ms = (time.perf_counter() - t0) * 1e3
            check_analysable(ds)
            x, pre_times = preprocess(ds, self.classifier.app_model, reduced=self.reduced_decode)
            timings.update(pre_times)
            timings["decode_ms"] += read_ms  # reading the file back is part of getting the pixels
            return _Prepared(job, ds, x, timings, t0)
        except NotAnalysable as exc:
            self._not_analysed(job, str(exc), timings)
        except Exception as exc:  # noqa: BLE001 - one bad study must never stop the worker
            self._error(job, exc, timings)
        return None

    def _error(self, job: Job, exc: Exception, timings: dict[str, float]) -> None:
        with self._lock:
            self.stats.errors += 1
        reason = f"analysis error ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
        LOG.warning("study %s: %s", job.sop_hash, reason)
        self._not_analysed(job, reason, timings)

    def _analysed(self, job: Job, ds, scores: dict[str, float], timings: dict[str, float], t0: float) -> None:
        flags, priority = self.ops.evaluate(scores)
        timings["analysis_ms"] = (time.perf_counter() - t0) * 1e3
        timings = {k: round(v, 3) for k, v in timings.items()}
        self.sr_stage.hand_over(job.sop_instance_uid, ds)
        try:
            self.worklist.commit_flag(
                job.sop_instance_uid, scores=scores, flags=flags, priority=priority,
                model_sha256=self.classifier.sha256, thresholds_version=self.ops.version, timings=timings)
        except BaseException:
            self.sr_stage.take_back(job.sop_instance_uid)
            raise
        self.sr_stage.wake()
        time_to_flag = time.time() - job.received_at
        with self._lock:
            self.stats.analysed += 1
            self.stats.time_to_flag_s.append(time_to_flag)
            self.stats.add_stages(timings)
        self.audit.write("analysed", sop_instance_uid_hash=job.sop_hash, study_hash=job.study_hash,
                         model_sha256=self.classifier.sha256, thresholds_version=self.ops.version,
                         scores={k: round(v, 4) for k, v in scores.items()}, flags=flags, priority=priority,
                         time_to_flag_s=round(time_to_flag, 4), timings=timings)

    def _sr_written(self, sr_ms: float) -> None:
        with self._lock:
            self.stats.add_stages({"sr_ms": sr_ms})
        if self.on_result is not None:
            self.on_result()

    def _not_analysed(self, job: Job, reason: str, timings: dict[str, float]) -> None:
        self.worklist.finish_not_analysed(job.sop_instance_uid, reason, timings)
        with self._lock:
            self.stats.not_analysed += 1
        LOG.info("study %s not analysed: %s", job.sop_hash, reason)
        self.audit.write("not_analysed", sop_instance_uid_hash=job.sop_hash, study_hash=job.study_hash,
                         reason=reason, model_sha256=self.classifier.sha256)
