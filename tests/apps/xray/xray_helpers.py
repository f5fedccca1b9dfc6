"""Helpers for the X-ray app tests: DICOM studies made here, a real `medge xray serve` subprocess,
a real pynetdicom storage SCP standing in for a PACS, worklist reading."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from fixtures.cli_checks import run_medge, spawn_medge
from fixtures.shared_build import build_once

STUDY_SIZE = 256
# Seeds of `medge.calibration.synthetic.cxr` phantoms the zoo demo weights read reliably:
URGENT_SEED = 3      # effusion + pneumothorax
UNFLAGGED_SEED = 1   # no finding above 0.5




def write_study(path: Path, **spec) -> str:
    """Write one synthetic study (see `PhantomSpec`); returns its SOPInstanceUID."""
    from medge.apps.xray.phantoms import PhantomSpec, write_phantom

    return write_phantom(path, PhantomSpec(size=spec.pop("size", STUDY_SIZE), **spec))


@dataclass
class StudySet:
    """The study fixtures by role, with their SOPInstanceUIDs."""

    folder: Path
    uids: dict[str, str] = field(default_factory=dict)

    def path(self, role: str) -> Path:
        return self.folder / f"{role}.dcm"


class Server:
    """`medge xray serve` in a subprocess; `port` is parsed from its 'listening on' line."""

    def __init__(self, args: list[str], report: Path | None = None) -> None:
        cmd = ["xray", "serve", "--port", "0", *args]
        if report is not None:
            cmd += ["--report", str(report)]
        self.proc = spawn_medge(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.port = 0
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(120) or not self.port:
            self.proc.kill()
            raise AssertionError("serve did not start:\n" + "".join(self.lines)[-3000:])

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(r"listening on [\d.]+:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                self._ready.set()
        self._ready.set()

    @property
    def address(self) -> str:
        return f"MEDGE@127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    @property
    def log(self) -> str:
        return "".join(self.lines)


class SinkSCP:
    """A real pynetdicom storage SCP that keeps every SR it receives (by the source image it references)."""

    def __init__(self, ae_title: str = "SINK") -> None:
        from pynetdicom import AE, StoragePresentationContexts, evt

        self.by_source: dict[str, list] = {}
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]
        self.address = f"{ae_title}@127.0.0.1:{self.port}"

    def _store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        source = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        with self._lock:
            self.by_source.setdefault(str(source), []).append(ds)
        return 0x0000

    def close(self) -> None:
        self.server.shutdown()


def worklist_json(run_cli, db: Path, *extra: str) -> list[dict]:
    """The `medge xray worklist --json` studies."""
    result = run_cli("xray", "worklist", "--db", db, "--json", *extra)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)["studies"]


def uid_hash(db: Path, uid: str) -> str:
    """The salted hash the worklist shows for `uid` (salt read from the database)."""
    from medge.apps.xray.audit import hash_id

    with sqlite3.connect(db) as conn:
        salt = conn.execute("SELECT value FROM meta WHERE key='salt'").fetchone()[0]
    return hash_id(salt, uid)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll `predicate` until it returns a truthy value; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def send_one_by_one(files: list[Path], port: int, statuses: dict[str, int], stop: threading.Event) -> None:
    """C-STORE each file on one association, recording the status per SOPInstanceUID, until the
    connection breaks or `stop` is set (used for the kill -9 burst)."""
    import pydicom
    from pynetdicom import AE

    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title="BURST")
    ae.add_requested_context(datasets[0].SOPClassUID, datasets[0].file_meta.TransferSyntaxUID)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDGE")
    if not assoc.is_established:
        return
    try:
        for ds in datasets:
            if stop.is_set() or not assoc.is_established:
                break
            try:
                status = assoc.send_c_store(ds)
            except Exception:  # noqa: BLE001 - the server was killed mid-transfer
                break
            if status and "Status" in status:
                statuses[str(ds.SOPInstanceUID)] = int(status.Status)
    finally:
        if assoc.is_established:
            assoc.abort()


def db_states(db: Path) -> dict[str, tuple[str, int, int]]:
    """sop hash → (state, SRs pending, SRs sent), read straight from SQLite (cheap enough to poll;
    the assertions themselves go through `medge xray worklist`)."""
    if not db.exists():
        return {}
    with sqlite3.connect(db, timeout=30) as conn:
        rows = conn.execute(
            "SELECT s.sop_hash, s.state,"
            " (SELECT COUNT(*) FROM outbox o WHERE o.study_sop_instance_uid=s.sop_instance_uid AND o.state='pending'),"
            " (SELECT COUNT(*) FROM outbox o WHERE o.study_sop_instance_uid=s.sop_instance_uid AND o.state='sent')"
            " FROM studies s").fetchall()
    return {h: (state, pending, sent) for h, state, pending, sent in rows}


def compiled_tiny_bundle(zoo_onnx, tmp_path_factory, target: str, key: str) -> Path:
    """`cxr-densenet-tiny` (batch fixed at 1 in the ONNX) compiled for `target` with the real `medge compile`,
    once per run under `key`."""

    def build(folder: Path) -> None:
        proc = run_medge(["compile", zoo_onnx("cxr-densenet-tiny", dynamic_batch=False), "--target", target,
                          "-o", folder / "bundle"])
        assert proc.returncode == 0, proc.stderr[-2000:]

    return build_once(tmp_path_factory, key, build) / "bundle"
