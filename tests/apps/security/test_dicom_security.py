"""DICOM security of `medge xray serve`, end to end through the real CLI: the called AE title is
checked, `--allow` restricts calling AEs, DICOM TLS with client certificates, SRs delivered over TLS
to a TLS peer, owner-only store files, and `--keep-days` retention, audited."""

from __future__ import annotations

import json
import ssl
import stat
import threading
from pathlib import Path

import pytest
from fixtures.cli_checks import assert_one_line_error
from xray_helpers import URGENT_SEED, wait_for, write_study


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _client_context(pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _associate(port: int, *, called: str = "MEDGE", calling: str = "TESTSCU", ctx: ssl.SSLContext | None = None):
    """(established, rejected, C-ECHO status or None) of one association from pynetdicom."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title=called, tls_args=(ctx, "localhost") if ctx else None)
    established, rejected, status = assoc.is_established, assoc.is_rejected, None
    if established:
        status = int(assoc.send_c_echo().Status)
        assoc.release()
    return established, rejected, status


def _audit(db: Path) -> list[dict]:
    path = db.with_name(db.name + ".audit.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class TlsSink:
    """A real pynetdicom storage SCP speaking DICOM TLS only, requiring a client certificate from the CA."""

    def __init__(self, pki) -> None:
        from pynetdicom import AE, StoragePresentationContexts, evt

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        ctx.load_verify_locations(cafile=str(pki.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.received: list = []
        self.calling: list[str] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="SINK")
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=ctx,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.address = f"SINK@localhost:{self.server.server_address[1]}"

    def _store(self, event) -> int:
        with self._lock:
            self.received.append(event.dataset)
            self.calling.append(str(event.assoc.requestor.ae_title))
        return 0x0000

    def close(self) -> None:
        self.server.shutdown()


def test_open_scp_warns_rejects_a_wrong_called_ae_and_keeps_files_owner_only(xray_bundle, start_server,
                                                                             run_cli, tmp_path):
    db, store = tmp_path / "wl.sqlite", tmp_path / "store"
    server = start_server(["--bundle", xray_bundle, "--db", db, "--store", store])
    assert "any calling AE title may store to MEDGE; restrict with --allow" in server.log

    assert _associate(server.port, called="WRONGAE") == (False, True, None)
    assert _associate(server.port) == (True, False, 0x0000)
    study = tmp_path / "study.dcm"
    write_study(study, seed=URGENT_SEED, size=128)
    bad = run_cli("xray", "send", study, "--to", f"WRONGAE@127.0.0.1:{server.port}")
    assert_one_line_error(bad, "did not accept an association")
    sent = run_cli("xray", "send", study, "--to", server.address, "--json")
    assert sent.returncode == 0, sent.stderr[-2000:]
    wait_for(lambda: any(e["event"] == "analysed" for e in _audit(db)), 60, "the study's analysis")

    assert server.stop() == 0
    for folder in (store, store / "instances", store / "sr"):
        assert _mode(folder) == 0o700, folder
    files = [*(store / "instances").iterdir(), *(store / "sr").iterdir()]
    assert len(files) == 2
    for path in [*files, db, db.with_name(db.name + ".audit.jsonl")]:
        assert _mode(path) == 0o600, path
    rejected = [e for e in _audit(db) if e["event"] == "association_rejected"]
    assert [e["reason"] for e in rejected] == ["called AE title not recognised"] * 2
    assert rejected[0]["calling_ae"] == "TESTSCU"


def test_tls_client_certificates_allow_list_and_sr_over_tls_with_retention(xray_bundle, start_server, run_cli,
                                                                          pki, tmp_path):
    sink = TlsSink(pki)
    db, store = tmp_path / "wl.sqlite", tmp_path / "store"
    try:
        server = start_server(["--bundle", xray_bundle, "--db", db, "--store", store, "--allow", "TESTSCU@127.0.0.1",
                               "--allow", "MEDGE-SCU", "--tls-cert", pki.server_chain, "--tls-key", pki.server_key,
                               "--tls-ca", pki.ca, "--sr-dest", sink.address, "--keep-days", "0"])
        assert "any calling AE" not in server.log
        good = _client_context(pki, pki.client_cert, pki.client_key)
        assert _associate(server.port, ctx=good) == (True, False, 0x0000)
        assert _associate(server.port, ctx=_client_context(pki))[0] is False  # no client certificate
        assert _associate(server.port, ctx=_client_context(pki, pki.rogue_cert, pki.rogue_key))[0] is False
        assert _associate(server.port)[0] is False  # no TLS at all
        assert _associate(server.port, calling="INTRUDER", ctx=good) == (False, True, None)
        assert _associate(server.port, called="WRONGAE", ctx=good) == (False, True, None)

        study = tmp_path / "study.dcm"
        write_study(study, seed=URGENT_SEED, size=128)
        plain = run_cli("xray", "send", study, "--to", f"MEDGE@localhost:{server.port}")
        assert_one_line_error(plain, "did not accept an association")
        sent = run_cli("xray", "send", study, "--to", f"MEDGE@localhost:{server.port}", "--tls-ca", pki.ca,
                       "--tls-cert", pki.client_cert, "--tls-key", pki.client_key, "--json")
        assert sent.returncode == 0, sent.stderr[-2000:]
        assert json.loads(sent.stdout)["items"][0]["status"] == "0x0000"

        wait_for(lambda: sink.received, 60, "the SR at the TLS sink")
        assert sink.received[0].Modality == "SR" and sink.calling == ["MEDGE"]
        deleted = wait_for(lambda: [e for e in _audit(db) if e["event"] == "instance_deleted"], 30,
                           "the retention's deletion")
        assert deleted[0]["reason"] == "retention" and deleted[0]["keep_days"] == 0
        assert list((store / "instances").iterdir()) == [] and list((store / "sr").iterdir()) == []
    finally:
        sink.close()
    assert server.stop() == 0
    reasons = [e["reason"] for e in _audit(db) if e["event"] == "association_rejected"]
    assert sorted(reasons) == ["called AE title not recognised", "calling AE title or host not allowed"]
    worklist = run_cli("xray", "worklist", "--db", db, "--json")
    assert worklist.returncode == 0 and len(json.loads(worklist.stdout)["studies"]) == 1  # the row stays


@pytest.mark.parametrize("extra, needle", [
    (["--tls-ca", "missing-ca.pem"], "--tls-ca missing-ca.pem: no such file"),
    (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
    (["--keep-days", "1"], "--keep-days deletes instances after their SR reached every --sr-dest"),
    (["--allow", "PACS@"], "--allow 'PACS@' is not AET or AET@host"),
])
def test_security_flag_errors_are_one_line(xray_bundle, run_cli, tmp_path, extra, needle):
    result = run_cli("xray", "serve", "--bundle", xray_bundle, "--db", tmp_path / "wl.sqlite",
                     "--store", tmp_path / "store", "--port", "0", *extra, cwd=tmp_path, timeout=120)
    assert_one_line_error(result, needle, code=2)
