"""PHI rules of the X-ray app: salted hashes for every identifier, a JSON-lines audit log, and
owner-only files (0600) in owner-only folders (0700) for everything that holds PHI.

Logs, the worklist and the audit log never carry patient name, ID or birth date.  Studies and
instances are referred to by ``hash_id(salt, uid)``: the first 16 hex digits of
sha256(salt ‖ uid).  The salt is random per database and stored inside it, so the hashes are
stable for one site and cannot be matched across sites.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any

LOG = logging.getLogger("medge.xray")
HASH_HEX = 16


def hash_id(salt: str, value: str) -> str:
    """Salted, truncated sha256 of an identifier (UID, accession) as hex."""
    return hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()[:HASH_HEX]


def private_dir(path: str | os.PathLike) -> Path:
    """Create `path` (and parents) if needed and make it owner-only (0700); returns it."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def private_file(path: str | os.PathLike) -> None:
    """Create `path` empty if missing and make it owner-only (0600), before anything is written to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def new_salt() -> str:
    """A fresh random salt for a new worklist database."""
    return os.urandom(16).hex()


class AuditLog:
    """Append-only JSON lines: one object per event with a UTC time and hashed ids only.

    Each line is written with a single ``write`` on an ``O_APPEND`` descriptor and fsynced, so
    concurrent threads never interleave and a crash loses at most the line being written.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(self._fd, 0o600)
        self._lock = threading.Lock()

    def write(self, event: str, **fields: Any) -> None:
        """Append one event (fields must already be PHI-free: hashes, states, timings)."""
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields}
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the log file."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


# Messages of pydicom and highdicom that quote a value read from a header (a birth date that does
# not parse, a patient name without a caret): they are dropped, as warnings and as log records.
_QUOTING_VALUES = (r"Invalid value for VR ", r"The string .* is unlikely to represent the intended person name")


class _DropQuotedValues(logging.Filter):
    """Drops log records whose message would quote a header value."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(re.match(pattern, message) for pattern in _QUOTING_VALUES)


_DROP_QUOTED_VALUES = _DropQuotedValues()


def quiet_dicom_loggers() -> None:
    """Stop pynetdicom, pydicom and highdicom from logging identifiers, even with ``--verbose``
    (pynetdicom logs the identifiers of C-STORE/C-FIND requests, highdicom the UIDs of the studies
    it copies and, as warnings, patient names it finds odd; pydicom quotes values that do not parse)."""
    from pynetdicom import _config

    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    for name in ("pynetdicom", "highdicom"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("pydicom", "highdicom"):
        logging.getLogger(name).addFilter(_DROP_QUOTED_VALUES)
    for pattern in _QUOTING_VALUES:
        warnings.filterwarnings("ignore", message=pattern)
