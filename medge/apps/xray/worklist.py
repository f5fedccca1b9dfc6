"""The X-ray worklist: one SQLite file (WAL, ``synchronous=FULL``) that never loses a study.

Tables:

* ``meta``: the PHI salt and schema version (the salt lives with the data it protects);
* ``studies``: one row per received instance, keyed by SOPInstanceUID (``INSERT OR IGNORE``, so a
  resend is a no-op), with its state, priority, flags, scores and the SR written for it;
* ``outbox``: one row per (SR, destination) still to send or sent, so an SR whose PACS is down is
  retried until it goes through, across restarts.

States: ``received`` (queued) → ``running`` → ``analysed`` | ``not_analysed`` (with a reason).
An ``analysed`` row's flag and priority are committed before its SR is built: ``sr_state`` is
``pending`` until the SR stage has written the SR and queued its deliveries (one transaction), then
``done``; a kill in between leaves it ``pending`` and the next start writes it (same SR UID).
``overdue`` is shown for a queued/running study older than ``--max-wait``.  Priority only goes up
(``MAX(priority, new)`` in SQL), and no row is ever deleted (``--keep-days`` deletes files only and
blanks their paths).

Every connection retries on "database is locked/busy" (another process or thread writing).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from medge.apps.xray.audit import hash_id, new_salt, private_file
from medge.common.errors import DataError

SCHEMA_VERSION = "1"
BUSY_RETRY_S = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_hash TEXT NOT NULL,
    study_hash TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    accession TEXT NOT NULL DEFAULT '',
    modality TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL,
    received_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'received',
    reason TEXT NOT NULL DEFAULT '',
    priority INTEGER NOT NULL DEFAULT 0,
    flags TEXT NOT NULL DEFAULT '[]',
    scores TEXT NOT NULL DEFAULT '{}',
    overdue INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    analysed_at REAL,
    timings TEXT NOT NULL DEFAULT '{}',
    model_sha256 TEXT NOT NULL DEFAULT '',
    thresholds_version TEXT NOT NULL DEFAULT '',
    sr_sop_instance_uid TEXT NOT NULL DEFAULT '',
    sr_path TEXT NOT NULL DEFAULT '',
    sr_state TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS studies_queue ON studies (state, priority DESC, received_at);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sr_sop_instance_uid TEXT NOT NULL,
    study_sop_instance_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    dest TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    sent_at REAL,
    UNIQUE (sr_sop_instance_uid, dest)
);
"""

T = TypeVar("T")
ARRIVAL_STAGES = ("receive_ms", "store_ms")


def _arrival_timings(text: str) -> dict[str, float]:
    """The receive/store timings of a row (an interrupted analysis's own timings are dropped)."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return {k: float(v) for k, v in data.items() if k in ARRIVAL_STAGES} if isinstance(data, dict) else {}


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


@dataclass(frozen=True)
class Job:
    """A claimed study: what a worker needs to analyse it."""

    sop_instance_uid: str
    sop_hash: str
    study_hash: str
    path: Path
    received_at: float
    attempts: int
    timings: dict[str, float]  # receive_ms and store_ms, measured when the instance arrived


@dataclass(frozen=True)
class SRJob:
    """An analysed study whose SR is still to be written."""

    sop_instance_uid: str
    sop_hash: str
    study_hash: str
    path: Path
    scores: dict[str, float]
    received_at: float


@dataclass(frozen=True)
class OutboxItem:
    """One SR still to deliver to one destination."""

    id: int
    sr_sop_instance_uid: str
    study_sop_instance_uid: str
    path: Path
    dest: str
    attempts: int


_CLAIM_ORDER = "priority DESC, attempts > 0 ASC, received_at ASC"  # most urgent, untried, oldest first


class Worklist:
    """The worklist database; safe to share between threads (one connection per thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.busy_retries = 0
        try:
            for suffix in ("", "-wal", "-shm"):  # owner-only (0600): SQLite gives its -wal/-shm the file's mode
                if not suffix or self.path.with_name(self.path.name + suffix).exists():
                    private_file(self.path.with_name(self.path.name + suffix))
        except OSError as exc:
            raise DataError(f"cannot create the worklist database {self.path} ({exc.strerror or exc}); "
                            "pass a --db path you can write") from exc
        try:
            self._retry(lambda: self._conn().executescript(SCHEMA))
            self._retry(self._migrate)
            self.salt = self._retry(self._ensure_salt)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path} is not a usable worklist database ({exc}); "
                            "pass a new --db path or restore the file") from exc

    # --- connection handling ---------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run `fn`, retrying with backoff while the database is locked by another writer."""
        deadline, delay = time.monotonic() + BUSY_RETRY_S, 0.01
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                self.busy_retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def attempt() -> T:
            with self._transaction() as conn:
                return fn(conn)

        return self._retry(attempt)

    def close(self) -> None:
        """Close every connection opened by any thread."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def _migrate(self) -> None:
        """Add ``sr_state`` to a database made before it existed (its rows' SRs were all written)."""
        conn = self._conn()
        if not any(row["name"] == "sr_state" for row in conn.execute("PRAGMA table_info(studies)")):
            conn.execute("ALTER TABLE studies ADD COLUMN sr_state TEXT NOT NULL DEFAULT ''")
        conn.execute("CREATE INDEX IF NOT EXISTS studies_sr ON studies (sr_state)")

    def _ensure_salt(self) -> str:
        def create(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT value FROM meta WHERE key='salt'").fetchone()
            if row is not None:
                return str(row[0])
            salt = new_salt()
            conn.execute("INSERT INTO meta (key, value) VALUES ('salt', ?), ('schema', ?)", (salt, SCHEMA_VERSION))
            return salt

        with self._transaction() as conn:
            return create(conn)

    # --- ingest ----------------------------------------------------------------------------
    def hash(self, value: str) -> str:
        """Salted hash of an identifier with this database's salt."""
        return hash_id(self.salt, value)

    def has(self, sop_instance_uid: str) -> bool:
        """Whether this instance is already on the list."""
        row = self._retry(lambda: self._conn().execute(
            "SELECT 1 FROM studies WHERE sop_instance_uid=?", (sop_instance_uid,)).fetchone())
        return row is not None

    def add_received(self, *, sop_instance_uid: str, study_instance_uid: str, accession: str, modality: str,
                     path: Path, received_at: float | None = None, timings: dict[str, float] | None = None) -> bool:
        """``INSERT OR IGNORE`` a received instance; True when it is new (False: a resend, a no-op).

        `timings` (receive_ms, store_ms) start the row's per-stage timings; the analysis adds its own."""
        values = (sop_instance_uid, self.hash(sop_instance_uid), self.hash(study_instance_uid), study_instance_uid,
                  accession, modality, str(path), time.time() if received_at is None else received_at,
                  json.dumps(timings or {}, sort_keys=True))
        cur = self._write(lambda conn: conn.execute(
            "INSERT OR IGNORE INTO studies (sop_instance_uid, sop_hash, study_hash, study_instance_uid, accession,"
            " modality, path, received_at, timings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values))
        return cur.rowcount == 1

    # --- the queue -------------------------------------------------------------------------
    def requeue_interrupted(self) -> int:
        """On start: jobs left ``running`` by a crash or kill go back to ``received``."""
        cur = self._write(lambda conn: conn.execute("UPDATE studies SET state='received' WHERE state='running'"))
        return cur.rowcount

    def claim(self) -> Job | None:
        """Take the most urgent, then oldest, queued study and mark it ``running`` (atomically).

        A study whose analysis was interrupted (process killed or crashed while it ran) is retried
        without limit, so a kill never costs a study its analysis; among equal priorities it waits
        behind studies not yet tried, so one that crashes the process cannot block the queue.
        """
        jobs = self.claim_many(1)
        return jobs[0] if jobs else None

    def claim_many(self, limit: int) -> list[Job]:
        """Take up to `limit` queued studies in `claim`'s order, in one transaction."""
        def take(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                "UPDATE studies SET state='running', attempts=attempts+1 WHERE sop_instance_uid IN ("
                " SELECT sop_instance_uid FROM studies WHERE state='received'"
                f" ORDER BY {_CLAIM_ORDER} LIMIT ?)"
                " RETURNING sop_instance_uid, sop_hash, study_hash, path, received_at, attempts, timings, priority",
                (max(1, int(limit)),)).fetchall()
            # RETURNING gives no order: the claim order again (attempts was raised by one for every row)
            rows = sorted(rows, key=lambda r: (-r["priority"], r["attempts"] > 1, r["received_at"]))
            return [Job(r["sop_instance_uid"], r["sop_hash"], r["study_hash"], Path(r["path"]), r["received_at"],
                        r["attempts"], _arrival_timings(r["timings"])) for r in rows]

        return self._write(take)

    def queued_count(self) -> int:
        """Studies waiting to be claimed (state ``received``)."""
        return int(self._retry(lambda: self._conn().execute(
            "SELECT COUNT(*) FROM studies WHERE state = 'received'").fetchone()[0]))

    def release(self, sop_instance_uid: str) -> None:
        """Put a running job back in the queue (clean shutdown before it finished)."""
        self._write(lambda conn: conn.execute(
            "UPDATE studies SET state='received', attempts=MAX(attempts-1, 0)"
            " WHERE sop_instance_uid=? AND state='running'", (sop_instance_uid,)))

    def commit_flag(self, sop_instance_uid: str, *, scores: dict[str, float], flags: list[str], priority: int,
                    model_sha256: str, thresholds_version: str, timings: dict[str, float]) -> None:
        """Record a result (flags, priority raised, never lowered) with its SR still to write (``sr_state``
        ``pending``): the flag reaches the worklist without waiting for the SR."""
        self._write(lambda conn: conn.execute(
            "UPDATE studies SET state='analysed', reason='', scores=?, flags=?, priority=MAX(priority, ?),"
            " analysed_at=?, timings=?, model_sha256=?, thresholds_version=?, sr_state='pending'"
            " WHERE sop_instance_uid=?",
            (json.dumps(scores, sort_keys=True), json.dumps(flags), priority, time.time(),
             json.dumps(timings, sort_keys=True), model_sha256, thresholds_version, sop_instance_uid)))

    def sr_to_write(self, limit: int = 16) -> list[SRJob]:
        """Analysed studies whose SR is not written yet, most urgent first, then oldest result first."""
        rows = self._retry(lambda: self._conn().execute(
            "SELECT sop_instance_uid, sop_hash, study_hash, path, scores, received_at FROM studies"
            " WHERE sr_state='pending' AND state='analysed' ORDER BY priority DESC, analysed_at ASC LIMIT ?",
            (limit,)).fetchall())
        return [SRJob(r["sop_instance_uid"], r["sop_hash"], r["study_hash"], Path(r["path"]),
                      {k: float(v) for k, v in json.loads(r["scores"]).items()}, r["received_at"]) for r in rows]

    def finish_sr(self, sop_instance_uid: str, *, sr_sop_instance_uid: str, sr_path: Path, sr_ms: float,
                  destinations: list[str]) -> None:
        """The SR is written (fsynced): record it, add its time (and the time from the flag's commit to
        now) to the row's timings and queue it for every destination, in one transaction."""
        def apply(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT timings, analysed_at FROM studies WHERE sop_instance_uid=?",
                               (sop_instance_uid,)).fetchone()
            timings = json.loads(row["timings"] or "{}") if row is not None else {}
            timings["sr_ms"] = round(sr_ms, 3)
            if row is not None and row["analysed_at"] is not None:  # how long after the flag the SR was ready
                timings["sr_after_flag_ms"] = round((time.time() - row["analysed_at"]) * 1e3, 3)
            conn.execute(
                "UPDATE studies SET sr_state='done', sr_sop_instance_uid=?, sr_path=?, timings=?"
                " WHERE sop_instance_uid=?",
                (sr_sop_instance_uid, str(sr_path), json.dumps(timings, sort_keys=True), sop_instance_uid))
            for dest in destinations:
                conn.execute(
                    "INSERT OR IGNORE INTO outbox (sr_sop_instance_uid, study_sop_instance_uid, path, dest)"
                    " VALUES (?, ?, ?, ?)", (sr_sop_instance_uid, sop_instance_uid, str(sr_path), dest))

        self._write(apply)

    def sr_unwritten(self) -> int:
        """Analysed studies whose SR is not written yet."""
        return int(self._retry(lambda: self._conn().execute(
            "SELECT COUNT(*) FROM studies WHERE sr_state='pending' AND state='analysed'").fetchone()[0]))

    def finish_not_analysed(self, sop_instance_uid: str, reason: str, timings: dict[str, float] | None = None) -> None:
        """A study that cannot be analysed stays on the list at its priority, with the reason."""
        self._write(lambda conn: conn.execute(
            "UPDATE studies SET state='not_analysed', reason=?, analysed_at=?, timings=? WHERE sop_instance_uid=?",
            (reason, time.time(), json.dumps(timings or {}, sort_keys=True), sop_instance_uid)))

    def mark_overdue(self, max_wait_s: float, overdue_priority: int, now: float | None = None) -> list[str]:
        """Flag queued/running studies older than `max_wait_s` as overdue; returns their hashes."""
        cutoff = (time.time() if now is None else now) - max_wait_s

        def apply(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "UPDATE studies SET overdue=1, priority=MAX(priority, ?) WHERE state IN ('received', 'running')"
                " AND overdue=0 AND received_at < ? RETURNING sop_hash", (overdue_priority, cutoff)).fetchall()
            return [r[0] for r in rows]

        return self._write(apply)

    def pending_count(self) -> int:
        """Studies queued or running."""
        return int(self._retry(lambda: self._conn().execute(
            "SELECT COUNT(*) FROM studies WHERE state IN ('received', 'running')").fetchone()[0]))

    # --- the SR outbox ---------------------------------------------------------------------
    def due_outbox(self, now: float | None = None, limit: int = 16) -> list[OutboxItem]:
        """Pending SR deliveries whose next attempt is due."""
        rows = self._retry(lambda: self._conn().execute(
            "SELECT id, sr_sop_instance_uid, study_sop_instance_uid, path, dest, attempts FROM outbox"
            " WHERE state='pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?",
            (time.time() if now is None else now, limit)).fetchall())
        return [OutboxItem(r["id"], r["sr_sop_instance_uid"], r["study_sop_instance_uid"], Path(r["path"]),
                           r["dest"], r["attempts"]) for r in rows]

    def outbox_sent(self, item_id: int) -> None:
        """Mark one delivery done."""
        self._write(lambda conn: conn.execute(
            "UPDATE outbox SET state='sent', sent_at=?, attempts=attempts+1, last_error='' WHERE id=?",
            (time.time(), item_id)))

    def outbox_retry(self, item_id: int, error: str, next_attempt_at: float) -> None:
        """Record a failed delivery and when to try again (it is never given up)."""
        self._write(lambda conn: conn.execute(
            "UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt_at=? WHERE id=?",
            (error[:300], next_attempt_at, item_id)))

    def outbox_pending(self) -> int:
        """SR deliveries not yet done."""
        return int(self._retry(lambda: self._conn().execute(
            "SELECT COUNT(*) FROM outbox WHERE state='pending'").fetchone()[0]))

    # --- retention -------------------------------------------------------------------------
    def delivered_before(self, cutoff: float) -> list[tuple[str, str, str, str]]:
        """Analysed instances still on disk whose SRs were all delivered before `cutoff`:
        (SOPInstanceUID, its hash, instance path, stored SR path)."""
        rows = self._retry(lambda: self._conn().execute(
            "SELECT s.sop_instance_uid, s.sop_hash, s.path, s.sr_path FROM studies s"
            " WHERE s.state='analysed' AND s.path != ''"
            " AND EXISTS (SELECT 1 FROM outbox o WHERE o.study_sop_instance_uid=s.sop_instance_uid)"
            " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.study_sop_instance_uid=s.sop_instance_uid"
            "  AND (o.state != 'sent' OR o.sent_at >= ?))", (cutoff,)).fetchall())
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def forget_files(self, sop_instance_uid: str) -> None:
        """Record that an instance's file and stored SR were deleted (the row and its results stay)."""
        self._write(lambda conn: conn.execute(
            "UPDATE studies SET path='', sr_path='' WHERE sop_instance_uid=?", (sop_instance_uid,)))

    # --- reading ---------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """Every study, most urgent first, then oldest first, with its SR delivery state."""
        def read() -> list[sqlite3.Row]:
            return self._conn().execute(
                "SELECT s.*, (SELECT COUNT(*) FROM outbox o WHERE o.study_sop_instance_uid=s.sop_instance_uid"
                "  AND o.state='pending') AS sr_pending,"
                " (SELECT COUNT(*) FROM outbox o WHERE o.study_sop_instance_uid=s.sop_instance_uid"
                "  AND o.state='sent') AS sr_sent"
                " FROM studies s ORDER BY s.priority DESC, s.received_at ASC").fetchall()

        return [dict(r) for r in self._retry(read)]
