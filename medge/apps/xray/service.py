"""The X-ray triage service: receiver + worker pool + SR outbox over one worklist database.

`serve` runs until its stop event is set (SIGINT/SIGTERM in the CLI); on start it requeues jobs a
crash left ``running``; on a clean stop running jobs finish (or stay queued for the next start).
`ingest` is the same durable path for files on disk, offline.  With ``keep_days`` the service
deletes instances that long after their SRs were delivered (`Store.delete_delivered`).
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from medge.apps.tls import TlsFiles, is_loopback
from medge.apps.xray.audit import LOG, AuditLog, quiet_dicom_loggers
from medge.apps.xray.classifier import Classifier, open_classifier
from medge.apps.xray.priority import OperatingPoints, default_points, load_points
from medge.apps.xray.receiver import Receiver, parse_address
from medge.apps.xray.sender import Outbox
from medge.apps.xray.store import DEFAULT_MIN_FREE_MB, Store, read_header_bytes
from medge.apps.xray.worker import WorkerPool, stage_summary
from medge.apps.xray.worklist import Worklist
from medge.common.console import warn
from medge.evaluate.statistics import latency_summary
from medge.common.errors import DataError, UsageError
from medge.common.reports import Report


RETENTION_POLL_S = 5.0


@dataclass
class XrayConfig:
    """Everything `serve` and `ingest` need."""

    bundle: Path
    db: Path
    store: Path
    sr_dest: list[str] = field(default_factory=list)
    sr_dir: Path | None = None
    thresholds: Path | None = None
    workers: int = 2
    threads: int | None = None
    max_wait_s: float = 1800.0
    min_free_mb: float = DEFAULT_MIN_FREE_MB
    ae_title: str = "MEDGE"
    host: str = "127.0.0.1"
    port: int = 11112
    allow: list[str] = field(default_factory=list)
    max_associations: int = 10
    tls: TlsFiles = TlsFiles()
    keep_days: float | None = None
    full_decode: bool = False  # decode at full resolution (default: at the model's, `medge.apps.xray.decode`)

    @property
    def audit_path(self) -> Path:
        """The audit log lives next to the database it describes."""
        return self.db.with_name(self.db.name + ".audit.jsonl")


@dataclass
class XrayReport(Report):
    """What a serve or ingest run did."""

    title: ClassVar[str] = "xray"
    mode: str = "serve"
    model: str = ""
    model_sha256: str = ""
    thresholds_version: str = ""
    thresholds_source: str = ""
    ae_title: str = ""
    port: int = 0
    requeued_on_start: int = 0
    received: int = 0
    duplicates: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    associations_rejected: dict[str, int] = field(default_factory=dict)
    analysed: int = 0
    not_analysed: int = 0
    errors: int = 0
    overdue: int = 0
    sr_sent: int = 0
    sr_send_failures: int = 0
    sr_pending: int = 0
    sr_unwritten: int = 0
    sr_unwritten_on_start: int = 0
    queued: int = 0
    busy_retries: int = 0
    time_to_flag_s: dict[str, float] = field(default_factory=dict)
    stages_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    decode: str = "reduced"
    files: list[dict[str, Any]] = field(default_factory=list)


def _percentiles(values: list[float]) -> dict[str, float]:
    """Time-to-flag p50/p95/max (s) and its count `n`: `evaluate.statistics.latency_summary`'s figures."""
    summary = latency_summary(values)
    return {k: summary[k] for k in ("p50", "p95", "max")} | {"n": summary["count"]} if summary else {}


def operating_points(classifier: Classifier, thresholds: Path | None) -> OperatingPoints:
    """The thresholds file when given (checked against the model hash), else the model's defaults."""
    if thresholds is not None:
        return load_points(thresholds, classifier.labels, classifier.sha256)
    return default_points(classifier.labels, dict(classifier.meta.extra or {}), classifier.sha256)


class XrayService:
    """Opened database, store, model and threads; `run` serves, `ingest` processes files."""

    def __init__(self, config: XrayConfig) -> None:
        for dest in config.sr_dest:
            parse_address(dest)
        if config.keep_days is not None and (config.keep_days < 0 or not config.sr_dest):
            raise UsageError("--keep-days deletes instances after their SR reached every --sr-dest; give it a "
                             "number of days >= 0 and at least one --sr-dest")
        quiet_dicom_loggers()
        self.config = config
        self.classifier = open_classifier(config.bundle, threads=config.threads)
        try:
            self.ops = operating_points(self.classifier, config.thresholds)
            self.worklist = Worklist(config.db)
        except BaseException:
            self.classifier.close()
            raise
        self.audit = AuditLog(config.audit_path)
        self.store = Store(config.store, self.worklist, config.min_free_mb)
        self.outbox = Outbox(self.worklist, self.audit, calling_ae=config.ae_title, tls=config.tls)
        self.pool = WorkerPool(self.worklist, self.classifier, self.ops, self.audit,
                               sr_outbox_dir=self.store.sr_outbox, sr_dir=config.sr_dir,
                               destinations=config.sr_dest, workers=config.workers, max_wait_s=config.max_wait_s,
                               on_result=self.outbox.wake, reduced_decode=not config.full_decode)
        self.requeued = self.worklist.requeue_interrupted()
        self.sr_unwritten_on_start = self.worklist.sr_unwritten()  # flagged before a kill: SRs written now
        self.audit.write("start", model_sha256=self.classifier.sha256, thresholds_version=self.ops.version,
                         thresholds=self.ops.to_dict()["points"], requeued=self.requeued,
                         sr_unwritten=self.sr_unwritten_on_start)

    def _report(self, mode: str) -> XrayReport:
        stats = self.pool.stats
        return XrayReport(
            mode=mode, model=self.classifier.name, model_sha256=self.classifier.sha256,
            thresholds_version=self.ops.version, thresholds_source=self.ops.source, ae_title=self.config.ae_title,
            requeued_on_start=self.requeued, analysed=stats.analysed, not_analysed=stats.not_analysed,
            errors=stats.errors, overdue=stats.overdue, sr_sent=self.outbox.sent,
            sr_send_failures=self.outbox.failures, sr_pending=self.worklist.outbox_pending(),
            sr_unwritten=self.worklist.sr_unwritten(), sr_unwritten_on_start=self.sr_unwritten_on_start,
            queued=self.worklist.pending_count(), busy_retries=self.worklist.busy_retries,
            time_to_flag_s=_percentiles(stats.time_to_flag_s), decode="full" if self.config.full_decode else "reduced",
            stages_ms=stage_summary(stats.stages_ms))

    def _retention(self) -> None:
        if self.config.keep_days is None:
            return
        try:
            self.store.delete_delivered(self.config.keep_days, self.audit)
        except (OSError, sqlite3.Error) as exc:  # retried at the next sweep; serving goes on
            LOG.warning("retention sweep failed (%s); retrying", exc)

    def close(self) -> None:
        """Close the model, the audit log and the database."""
        self.classifier.close()
        self.audit.close()
        self.worklist.close()

    def run(self, stop: threading.Event) -> XrayReport:
        """Serve until `stop` is set; returns what happened."""
        receiver = Receiver(self.store, self.audit, ae_title=self.config.ae_title, host=self.config.host,
                            port=self.config.port, allow=self.config.allow,
                            max_associations=self.config.max_associations, on_stored=self.pool.wake,
                            tls=self.config.tls)
        self.pool.warm_up()  # before listening: a study that arrives is not held up by first-call costs
        self.outbox.start()
        self.pool.start()
        try:
            port = receiver.start()
        except BaseException:
            self.pool.stop()
            self.outbox.stop()
            raise
        if not self.config.allow:
            warn(f"any calling AE title may store to {self.config.ae_title}; restrict with --allow AET[@host]")
        if not self.config.tls.enabled and not is_loopback(receiver.host):
            warn(f"DICOM on {receiver.host} is not encrypted; add --tls-cert/--tls-key (and --tls-ca for client "
                 "certificates)")
        print(f"medge xray: {self.config.ae_title} listening on {self.config.host}:{port} "
              f"(model {self.classifier.name} {self.classifier.sha256[:12]}, thresholds {self.ops.version}, "
              f"{self.requeued} requeued, {self.sr_unwritten_on_start} SRs to write)", file=sys.stderr, flush=True)
        self.audit.write("listening", port=port, ae_title=self.config.ae_title, tls=self.config.tls.enabled,
                         allow=self.config.allow)
        try:
            while not stop.wait(RETENTION_POLL_S):
                self._retention()
        finally:
            receiver.stop()
            self.pool.stop()
            self.outbox.stop()
        report = self._report("serve")
        report.port = port
        report.received, report.duplicates = receiver.stats.received, receiver.stats.duplicates
        report.refused = dict(receiver.stats.refused)
        report.associations_rejected = dict(receiver.stats.rejected)
        self.audit.write("stop", received=report.received, analysed=report.analysed, queued=report.queued)
        return report

    def ingest(self, files: list[Path]) -> XrayReport:
        """Store, queue, analyse and deliver `files` offline; one entry per file in the report."""
        outcomes: list[dict[str, Any]] = []
        received = duplicates = 0
        for path in files:
            try:
                t0 = time.perf_counter()
                data = path.read_bytes()
                header = read_header_bytes(data)
                if not self.store.has_room(len(data)):
                    raise DataError("disk nearly full")
                stored = self.store.put(data, header, receive_ms=(time.perf_counter() - t0) * 1e3)
            except (DataError, OSError) as exc:
                LOG.warning("ingest refused %s: %s", path.name, exc)
                outcomes.append({"file": path.name, "stored": False, "reason": str(exc).split(";")[0]})
                continue
            received += stored.new
            duplicates += not stored.new
            outcomes.append({"file": path.name, "stored": True, "new": stored.new,
                             "sop_instance_uid_hash": stored.sop_hash})
            self.audit.write("ingested" if stored.new else "resend_ignored", sop_instance_uid_hash=stored.sop_hash)
        self.pool.drain()
        if self.config.sr_dest:
            due = self.worklist.due_outbox(limit=100000)
            if due:
                self.outbox.deliver(due)
        self._retention()
        report = self._report("ingest")
        report.received, report.duplicates, report.files = received, duplicates, outcomes
        report.refused = {"unreadable": sum(1 for o in outcomes if not o["stored"])}
        return report

