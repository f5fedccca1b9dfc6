"""Durable ingest: the received file is on disk (fsynced) and on the worklist before success.

Order, for the network receiver and the offline ``ingest`` alike:

1. write the file atomically: temporary file in the store, ``fsync``, rename, ``fsync`` the folder;
2. ``INSERT OR IGNORE`` the instance into the worklist (WAL, ``synchronous=FULL``), keyed by
   SOPInstanceUID;
3. only then report success (C-STORE 0x0000).

A crash between 1 and 2 leaves an orphan file and no success status, so the sender resends it.
Files are named by the salted SOPInstanceUID hash, never by anything that identifies a patient.
They are owner-only (0600) in owner-only folders (0700).  With a retention (``--keep-days``), an
instance and its stored SR are deleted that long after its SR reached every destination (the
worklist row stays, with its results); each deletion is audited.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from medge.apps.xray.audit import AuditLog, private_dir
from medge.apps.xray.worklist import Worklist
from medge.common.errors import DataError

DEFAULT_MIN_FREE_MB = 256.0


@dataclass(frozen=True)
class Header:
    """The identifiers and routing fields of a received instance (kept in the DB, never logged)."""

    sop_instance_uid: str
    study_instance_uid: str
    accession: str
    modality: str


@dataclass(frozen=True)
class Stored:
    """Where an instance went and whether it was new (False: a resend, nothing changed)."""

    sop_hash: str
    path: Path
    new: bool


def header_of(ds: Any) -> Header:
    """The fields the worklist needs from a pydicom dataset (raises DataError when a UID is missing)."""
    sop = str(ds.get("SOPInstanceUID", "") or "").strip()
    study = str(ds.get("StudyInstanceUID", "") or "").strip()
    if not sop or not study:
        raise DataError("instance has no SOPInstanceUID or StudyInstanceUID; it cannot be tracked")
    return Header(sop, study, str(ds.get("AccessionNumber", "") or ""), str(ds.get("Modality", "") or ""))


def read_header_bytes(data: bytes) -> Header:
    """Parse the header of a DICOM file held in memory (raises DataError for non-DICOM data)."""
    import pydicom

    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
    except Exception as exc:
        raise DataError(f"not a readable DICOM file ({type(exc).__name__})") from exc
    return header_of(ds)


def fsync_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably (temp + fsync + rename + fsync of the folder)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Store:
    """The instance folder plus the worklist: `put` is the durable-ingest transaction."""

    def __init__(self, root: str | Path, worklist: Worklist, min_free_mb: float = DEFAULT_MIN_FREE_MB) -> None:
        self.root = private_dir(root)
        self.instances = private_dir(self.root / "instances")
        self.sr_outbox = private_dir(self.root / "sr")
        self.worklist = worklist
        self.min_free_bytes = int(min_free_mb * 1024 * 1024)

    def free_bytes(self) -> int:
        """Free space on the store's file system."""
        return shutil.disk_usage(self.instances).free

    def has_room(self, incoming: int = 0) -> bool:
        """Whether `incoming` more bytes still leave the configured reserve free."""
        return self.free_bytes() - incoming >= self.min_free_bytes

    def put(self, data: bytes, header: Header, receive_ms: float | None = None) -> Stored:
        """Store one encoded instance (DICOM file format bytes) durably and queue it; the row's timings
        get `receive_ms` (when given) and store_ms (the file write and its fsyncs)."""
        t0 = time.perf_counter()
        sop_hash = self.worklist.hash(header.sop_instance_uid)
        path = self.instances / f"{sop_hash}.dcm"
        if self.worklist.has(header.sop_instance_uid):
            return Stored(sop_hash, path, False)
        fsync_write(path, data)
        timings = {"store_ms": round((time.perf_counter() - t0) * 1e3, 3)}  # file and fsyncs; not the commit
        if receive_ms is not None:
            timings["receive_ms"] = round(receive_ms, 3)
        received_at = time.time()
        new = self.worklist.add_received(sop_instance_uid=header.sop_instance_uid,
                                         study_instance_uid=header.study_instance_uid, accession=header.accession,
                                         modality=header.modality, path=path, received_at=received_at,
                                         timings=timings)
        return Stored(sop_hash, path, new)

    def delete_delivered(self, keep_days: float, audit: AuditLog) -> int:
        """Delete instances (and their stored SRs) whose SRs were all delivered over `keep_days` ago.

        The file goes first, then its path in the worklist: a crash in between is finished by the
        next sweep.  Returns how many instances were deleted.
        """
        deleted = 0
        for uid, sop_hash, *paths in self.worklist.delivered_before(time.time() - keep_days * 86400.0):
            for path in filter(None, paths):
                Path(path).unlink(missing_ok=True)
            self.worklist.forget_files(uid)
            audit.write("instance_deleted", sop_instance_uid_hash=sop_hash, reason="retention", keep_days=keep_days)
            deleted += 1
        return deleted
