"""The DICOM receiver: a pynetdicom storage SCP that answers C-ECHO and stores durably.

Every storage SOP class is accepted with uncompressed, deflated, JPEG, JPEG-LS, JPEG 2000 and RLE
transfer syntaxes (decoded later by pydicom's pylibjpeg/openjpeg plugins).  A C-STORE is answered:

* ``0x0000`` only after the file is fsynced and the worklist row committed (see `store.Store`);
* ``0xA700`` (out of resources) when the disk would drop below the reserve, or the database stays
  locked, before anything is written;
* ``0xC210`` (cannot understand) with an ErrorComment for data that does not decode as DICOM or
  lacks its UIDs.

Each refusal is one log line naming the instance by its salted hash; the handler never raises, so a
bad peer never takes the server down.  pynetdicom's identifier logging is switched off.

Associations: the called AE title must be ours (A-ASSOCIATE-RJ "called AE title not recognised"
otherwise); with ``allow`` (``AET`` or ``AET@host`` entries) the calling AE title, and the peer's
address when a host is named, must match one entry ("calling AE title not recognised").  Each
rejection is audited.  With TLS files the SCP speaks DICOM TLS only (PS3.15 Annex B); with a CA the
peer must present a certificate it signed.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medge.apps.tls import TlsFiles
from medge.apps.xray.audit import LOG, AuditLog, quiet_dicom_loggers
from medge.apps.xray.store import Store, read_header_bytes
from medge.common.errors import DataError, UsageError

SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC210


def accepted_transfer_syntaxes() -> list[str]:
    """The transfer syntaxes the SCP accepts (uncompressed first, so peers prefer them)."""
    from pydicom import uid

    return [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
            uid.ExplicitVRBigEndian, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless,
            uid.JPEGLosslessSV1, uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless,
            uid.JPEG2000, uid.RLELossless]


@dataclass
class ReceiverStats:
    """What the receiver answered, by outcome."""

    received: int = 0
    duplicates: int = 0
    refused: Counter = field(default_factory=Counter)
    echoes: int = 0
    rejected: Counter = field(default_factory=Counter)


def parse_address(text: str) -> tuple[str, str, int]:
    """``AET@host:port`` → (ae_title, host, port); raises UsageError naming the expected form."""
    aet, sep, rest = text.rpartition("@")
    host, colon, port = rest.rpartition(":")
    if not sep or not colon or not aet or not host or not port.isdigit() or not 0 < int(port) < 65536 \
            or len(aet) > 16:
        raise UsageError(f"'{text}' is not a DICOM address; expected AET@host:port, e.g. PACS@127.0.0.1:4242")
    return aet, host, int(port)


def parse_allow(entries: list[str]) -> list[tuple[str, frozenset[str] | None]]:
    """``AET`` / ``AET@host`` entries → (AE title, the host's addresses or None for any host).

    Host names are resolved once, here; raises UsageError for a bad entry or an unknown host.
    """
    parsed = []
    for entry in entries:
        aet, _, host = entry.partition("@")
        if not aet or len(aet) > 16 or (_ and not host):
            raise UsageError(f"--allow '{entry}' is not AET or AET@host; e.g. --allow PACS@10.0.0.5")
        if not host:
            parsed.append((aet, None))
            continue
        try:
            addresses = frozenset(info[4][0] for info in socket.getaddrinfo(host.strip("[]"), None))
        except OSError:
            raise UsageError(f"--allow '{entry}': cannot resolve host '{host}'; pass its address") from None
        parsed.append((aet, addresses))
    return parsed


def _status(code: int, comment: str) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


class Receiver:
    """The storage SCP: call `start`, then `stop` (it serves in pynetdicom's own threads)."""

    def __init__(self, store: Store, audit: AuditLog, *, ae_title: str = "MEDGE", host: str = "127.0.0.1",
                 port: int = 11112, allow: list[str] | None = None, max_associations: int = 10,
                 on_stored: Callable[[], None] | None = None, tls: TlsFiles | None = None) -> None:
        if not ae_title or len(ae_title) > 16:
            raise UsageError(f"AE title '{ae_title}' must be 1 to 16 characters")
        self.store, self.audit = store, audit
        self.ae_title, self.host, self.port = ae_title, host, port
        self.allow = parse_allow(list(allow or []))
        self.ssl_context = tls.server_context() if tls is not None and tls.enabled else None
        self.max_associations = max_associations
        self.on_stored = on_stored
        self.stats = ReceiverStats()
        self._lock = threading.Lock()
        self._server: Any = None

    def start(self) -> int:
        """Bind and serve; returns the bound port (useful with port 0)."""
        from pynetdicom import AE, StoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        quiet_dicom_loggers()
        ae = AE(ae_title=self.ae_title)
        ae.maximum_associations = self.max_associations
        ae.require_called_aet = True
        ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs for 8 MB radiographs
        syntaxes = accepted_transfer_syntaxes()
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification)
        handlers = [(evt.EVT_C_STORE, self._handle_store), (evt.EVT_C_ECHO, self._handle_echo),
                    (evt.EVT_REQUESTED, self._handle_requested), (evt.EVT_REJECTED, self._handle_rejected)]
        try:
            self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers,
                                           ssl_context=self.ssl_context)
        except OSError as exc:
            raise DataError(f"cannot listen on {self.host}:{self.port} ({exc.strerror or exc}); "
                            "pick another --port or stop the program using it") from exc
        self.port = int(self._server.server_address[1])
        return self.port

    def stop(self) -> None:
        """Stop accepting associations and close the open ones."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _refuse(self, code: int, why: str, sop_hash: str = "") -> Any:
        with self._lock:
            self.stats.refused[why.split(" (")[0]] += 1
        LOG.warning("C-STORE refused 0x%04X: %s%s", code, why, f" (instance {sop_hash})" if sop_hash else "")
        self.audit.write("store_refused", status=f"0x{code:04X}", reason=why, sop_instance_uid_hash=sop_hash)
        return _status(code, why)

    def _rejected(self, assoc: Any, why: str) -> None:
        with self._lock:
            self.stats.rejected[why] += 1
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        LOG.warning("association from %s at %s rejected: %s", calling, assoc.requestor.address, why)
        self.audit.write("association_rejected", reason=why, calling_ae=calling, peer=assoc.requestor.address)

    def _handle_requested(self, event: Any) -> None:
        """Reject a calling AE title (or peer address) that ``allow`` does not list."""
        if not self.allow:
            return
        calling = str(event.assoc.requestor.primitive.calling_ae_title).strip()
        address = event.assoc.requestor.address
        if any(calling == aet and (hosts is None or address in hosts) for aet, hosts in self.allow):
            return
        event.assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, service user, calling AE not recognised
        event.assoc.kill()  # as pynetdicom's own rejections: lets the DUL send the A-ASSOCIATE-RJ first
        self._rejected(event.assoc, "calling AE title or host not allowed")

    def _handle_rejected(self, event: Any) -> None:
        reasons = {(1, 3): "calling AE title not recognised", (1, 7): "called AE title not recognised",
                   (3, 2): "too many associations"}
        rj = event.assoc.acceptor.primitive
        key = (getattr(rj, "result_source", None), getattr(rj, "diagnostic", None))
        self._rejected(event.assoc, reasons.get(key, f"rejected (source {key[0]}, diagnostic {key[1]})"))

    def _handle_echo(self, event: Any) -> int:
        with self._lock:
            self.stats.echoes += 1
        return SUCCESS

    def _handle_store(self, event: Any) -> Any:
        t0 = time.perf_counter()
        try:
            if not self.store.has_room():
                return self._refuse(OUT_OF_RESOURCES, "disk nearly full")
            data = event.encoded_dataset()
            if not self.store.has_room(len(data)):
                return self._refuse(OUT_OF_RESOURCES, "disk nearly full")
            try:
                header = read_header_bytes(data)  # the header only: the pixel data is never decoded here
            except DataError as exc:
                return self._refuse(CANNOT_UNDERSTAND, str(exc).split(";")[0])
            sop_hash = self.store.worklist.hash(header.sop_instance_uid)
            try:
                stored = self.store.put(data, header, receive_ms=(time.perf_counter() - t0) * 1e3)
            except sqlite3.Error as exc:
                return self._refuse(OUT_OF_RESOURCES, f"worklist database unavailable ({type(exc).__name__})", sop_hash)
            except OSError as exc:
                return self._refuse(OUT_OF_RESOURCES, f"cannot write the instance ({exc.strerror or exc})", sop_hash)
        except Exception as exc:  # noqa: BLE001 - never let a peer crash the server
            LOG.exception("C-STORE handler failed")
            return _status(OUT_OF_RESOURCES, f"internal error ({type(exc).__name__})")
        with self._lock:
            if stored.new:
                self.stats.received += 1
            else:
                self.stats.duplicates += 1
        self.audit.write("received" if stored.new else "resend_ignored", sop_instance_uid_hash=stored.sop_hash,
                         study_hash=self.store.worklist.hash(header.study_instance_uid), bytes=len(data),
                         calling_ae=str(event.assoc.requestor.ae_title), ms=round((time.perf_counter() - t0) * 1e3, 2))
        if stored.new and self.on_stored is not None:
            self.on_stored()
        return SUCCESS
