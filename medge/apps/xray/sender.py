"""C-STORE out: a small sender (``medge xray send``) and the SR outbox that never loses an SR.

Files are sent as stored, without decoding (pynetdicom's chunked send), each with a presentation
context for its own SOP class and transfer syntax.  The outbox thread delivers queued SRs to every
``--sr-dest``; a failure (destination down, refusal) is retried with exponential backoff up to a
minute, forever, across restarts, because the queue lives in the worklist database.  With TLS
files, every association is DICOM TLS: the peer's certificate and host name are verified against
``--tls-ca`` and ours (``--tls-cert``) is presented.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from medge.apps.tls import TlsFiles
from medge.apps.xray.audit import LOG, AuditLog, quiet_dicom_loggers
from medge.apps.xray.receiver import parse_address
from medge.apps.xray.worklist import OutboxItem, Worklist
from medge.common.errors import DataError, UsageError
from medge.common.reports import ListReport

BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 60.0


@dataclass
class SendResult:
    """The outcome for one file."""

    file: str
    status: str  # "0x0000", another status, or "not sent"
    ok: bool
    detail: str = ""


@dataclass
class SendReport(ListReport):
    """Per-file C-STORE results; the command fails when any file was not accepted."""

    title: ClassVar[str] = "xray send"

    @property
    def ok(self) -> bool:
        return all(item["ok"] for item in self.items)


def _file_context(path: Path) -> tuple[str, str]:
    """(SOP class UID, transfer syntax UID) of a DICOM file, read from its header."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:
        raise DataError(f"not a readable DICOM file ({type(exc).__name__})") from exc
    sop_class = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not sop_class or not syntax:
        raise DataError("no SOP class or transfer syntax in the file meta")
    return str(sop_class), str(syntax)


def send_files(paths: list[Path], dest: str, *, calling_ae: str = "MEDGE-SCU", timeout: float = 30.0,
               ssl_context: ssl.SSLContext | None = None, associations: int = 1) -> list[SendResult]:
    """C-STORE every file to ``AET@host:port`` over associations of up to 128 contexts each (DICOM
    TLS with `ssl_context`, from `TlsFiles.client_context`).

    With `associations` > 1 the files are dealt round-robin to that many associations sent at once
    (as a PACS router's parallel send queues do), so one file's round trip (the receiver's fsyncs)
    overlaps the next file's transfer.  Results keep the order of `paths`.
    Raises DataError when the destination does not accept an association.
    """
    from pynetdicom import _config

    if associations < 1:
        raise UsageError(f"--associations {associations}: give 1 or more")
    quiet_dicom_loggers()
    _config.STORE_SEND_CHUNKED_DATASET = True
    aet, host, port = parse_address(dest)
    n = max(1, min(associations, len(paths)))
    lanes = [list(range(k, len(paths), n)) for k in range(n)]
    if len(lanes) == 1:
        return _send_lane(paths, dest, aet, host, port, calling_ae, timeout, ssl_context)
    with ThreadPoolExecutor(len(lanes), thread_name_prefix="xray-send") as pool:
        futures = [pool.submit(_send_lane, [paths[i] for i in lane], dest, aet, host, port, calling_ae, timeout,
                               ssl_context) for lane in lanes]
        results: dict[int, SendResult] = {}
        for lane, future in zip(lanes, futures):
            results.update(zip(lane, future.result()))
    return [results[i] for i in range(len(paths))]


def _send_lane(paths: list[Path], dest: str, aet: str, host: str, port: int, calling_ae: str, timeout: float,
               ssl_context: ssl.SSLContext | None) -> list[SendResult]:
    """`send_files` over one association at a time (a new one per 128 presentation contexts)."""
    from pynetdicom import AE

    tls_args = (ssl_context, host) if ssl_context is not None else None
    results: dict[int, SendResult] = {}
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        try:
            groups[_file_context(path)].append(i)
        except DataError as exc:
            results[i] = SendResult(str(path), "not sent", False, str(exc))
    contexts = list(groups)
    for start in range(0, len(contexts), 128):
        chunk = contexts[start:start + 128]
        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        for sop_class, syntax in chunk:
            ae.add_requested_context(sop_class, syntax)
        assoc = ae.associate(host, port, ae_title=aet, tls_args=tls_args)
        if not assoc.is_established:
            check_tls = ", and does its TLS certificate verify against --tls-ca" if tls_args else ""
            raise DataError(f"{dest} did not accept an association (is it running, does it allow AE title "
                            f"{calling_ae}{check_tls}?)")
        try:
            for key in chunk:
                for i in groups[key]:
                    results[i] = _store_one(assoc, paths[i])
        finally:
            if assoc.is_established:
                assoc.release()
    return [results[i] for i in range(len(paths))]


def _store_one(assoc, path: Path) -> SendResult:
    try:
        status = assoc.send_c_store(path)
    except Exception as exc:  # noqa: BLE001 - a broken file or context must not stop the batch
        return SendResult(str(path), "not sent", False, f"{type(exc).__name__}: {str(exc)[:120]}")
    if not status or "Status" not in status:
        return SendResult(str(path), "no response", False, "association aborted or timed out")
    code = int(status.Status)
    return SendResult(str(path), f"0x{code:04X}", code == 0x0000, str(status.get("ErrorComment", "") or ""))


class Outbox:
    """Delivers queued SRs from the worklist to their destinations, with backoff, in one thread."""

    def __init__(self, worklist: Worklist, audit: AuditLog, *, calling_ae: str = "MEDGE",
                 tls: TlsFiles | None = None) -> None:
        self.worklist, self.audit, self.calling_ae = worklist, audit, calling_ae
        self.ssl_context = tls.client_context() if tls is not None and tls.enabled else None
        self.sent = 0
        self.failures = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start delivering in the background."""
        self._thread = threading.Thread(target=self._loop, name="xray-outbox", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A new SR is queued: deliver now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Stop after the current delivery (what is pending stays queued)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            due = self.worklist.due_outbox()
            if due:
                self.deliver(due)
                continue
            self._wake.wait(0.25)

    def deliver(self, items: list[OutboxItem]) -> None:
        """Try each item once; success marks it sent, failure schedules the next attempt."""
        by_dest: dict[str, list[OutboxItem]] = defaultdict(list)
        for item in items:
            by_dest[item.dest].append(item)
        for dest, batch in by_dest.items():
            try:
                results = send_files([item.path for item in batch], dest, calling_ae=self.calling_ae, timeout=10.0,
                                     ssl_context=self.ssl_context)
            except DataError as exc:
                results = [SendResult(str(item.path), "not sent", False, str(exc).split(" (")[0]) for item in batch]
            for item, result in zip(batch, results):
                if result.ok:
                    self.worklist.outbox_sent(item.id)
                    self.sent += 1
                    self.audit.write("sr_sent", dest=dest, attempts=item.attempts + 1,
                                     sr_uid_hash=self.worklist.hash(item.sr_sop_instance_uid))
                    continue
                self.failures += 1
                delay = min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** item.attempts)
                error = f"{result.status} {result.detail}".strip()
                self.worklist.outbox_retry(item.id, error, time.time() + delay)
                if item.attempts == 0 or item.attempts % 10 == 0:
                    LOG.warning("SR for %s to %s failed (%s); retrying in %.1f s",
                                self.worklist.hash(item.study_sop_instance_uid), dest, error, delay)
                self.audit.write("sr_retry", dest=dest, attempts=item.attempts + 1, error=error, retry_in_s=delay,
                                 sr_uid_hash=self.worklist.hash(item.sr_sop_instance_uid))
