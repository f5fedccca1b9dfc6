"""Real PACS: Debian's Orthanc as the SR destination, down at first (the SR waits in the outbox with
backoff), then started; the SR arrives and reads back through Orthanc's REST API."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from fixtures.net import free_port
from xray_helpers import db_states, uid_hash, wait_for, worklist_json

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def _get(http_port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=10) as response:
        body = response.read()
    return json.loads(body) if response.headers.get_content_type() == "application/json" else body


def _start_orthanc(root: Path, dicom_port: int, http_port: int) -> subprocess.Popen:
    config = {
        "Name": "medge-test", "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port,
        "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True, "Plugins": [], "ConcurrentJobs": 1, "HttpDescribeErrors": True,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "orthanc.json").write_text(json.dumps(config))
    with open(root / "orthanc.log", "w") as log:
        proc = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=subprocess.DEVNULL, stderr=log)

    def up():
        if proc.poll() is not None:
            raise AssertionError("Orthanc exited:\n" + (root / "orthanc.log").read_text()[-2000:])
        try:
            return _get(http_port, "/system")
        except OSError:
            return None

    wait_for(up, 180, "Orthanc to answer on its REST port")
    return proc


def _text_values(items, out: dict) -> dict:
    for item in items or []:
        if item.get("ValueType") == "TEXT":
            out[item["ConceptNameCodeSequence"][0]["CodeMeaning"]] = item["TextValue"]
        _text_values(item.get("ContentSequence"), out)
    return out


@pytest.mark.skipif(not Path(ORTHANC).exists(), reason="Orthanc is not installed (apt-get install orthanc)")
def test_sr_reaches_orthanc_after_it_comes_up(xray_bundle, studies, start_server, run_cli, tmp_path):
    import pydicom

    dicom_port, http_port = free_port(), free_port()
    db = tmp_path / "wl.sqlite"
    server = start_server(["--bundle", xray_bundle, "--db", db, "--store", tmp_path / "store",
                           "--sr-dest", f"ORTHANC@127.0.0.1:{dicom_port}"])
    assert run_cli("xray", "send", studies.path("urgent_dx"), "--to", server.address).returncode == 0
    sop_hash = uid_hash(db, studies.uids["urgent_dx"])

    def row():
        return next((s for s in worklist_json(run_cli, db) if s["sop_instance_uid_hash"] == sop_hash), None)

    wait_for(lambda: db_states(db).get(sop_hash, ("",))[0] == "analysed", 180, "the study to be analysed")
    audit = db.with_name(db.name + ".audit.jsonl")
    wait_for(lambda: '"sr_retry"' in audit.read_text(), 90, "a failed SR delivery while Orthanc is down")
    assert row()["sr"] == "pending"

    orthanc = _start_orthanc(tmp_path / "orthanc", dicom_port, http_port)
    try:
        wait_for(lambda: db_states(db)[sop_hash][2] == 1, 240, "the SR to be delivered once Orthanc is up")
        assert row()["sr"] == "sent"
        (instance,) = _get(http_port, "/instances")
        tags = _get(http_port, f"/instances/{instance}/tags?simplify")
        source = pydicom.dcmread(studies.path("urgent_dx"), stop_before_pixels=True)
        assert tags["SOPClassUID"] == COMPREHENSIVE_3D_SR and tags["Modality"] == "SR"
        assert tags["StudyInstanceUID"] == source.StudyInstanceUID  # joins the original study
        evidence = tags["CurrentRequestedProcedureEvidenceSequence"][0]["ReferencedSeriesSequence"][0]
        assert evidence["ReferencedSOPSequence"][0]["ReferencedSOPInstanceUID"] == source.SOPInstanceUID
        assert _text_values(tags["ContentSequence"], {})["Algorithm Version"] == row()["model_sha256"]
        study = _get(http_port, f"/instances/{instance}/study")
        assert study["MainDicomTags"]["StudyInstanceUID"] == source.StudyInstanceUID
    finally:
        orthanc.terminate()
        orthanc.wait(30)
    assert server.stop() == 0
