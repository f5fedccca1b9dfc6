"""send → serve → worklist → SR, over real DICOM associations on loopback, through the CLI."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures.cli_checks import assert_one_line_error
from xray_helpers import (
    STUDY_SIZE,
    UNFLAGGED_SEED,
    URGENT_SEED,
    db_states,
    uid_hash,
    wait_for,
    worklist_json,
    write_study,
)

PHI = ("PHANTOM", "FAKE-0001", "19000101")
ROLES = ["plain_cr_mono1", "urgent_dx", "urgent_j2k", "lateral", "ct", "window_error", "truncated"]


def _texts(items, out: dict | None = None) -> dict:
    """Concept name → text value of every TEXT content item in `items` (recursively)."""
    out = {} if out is None else out
    for item in items:
        if item.ValueType == "TEXT":
            out[item.ConceptNameCodeSequence[0].CodeMeaning] = item.TextValue
        _texts(getattr(item, "ContentSequence", []), out)
    return out


def _expected_scores(bundle: Path, seed: int) -> np.ndarray:
    from medge.apps.model import AppModel
    from medge.apps.xray.phantoms import phantom_image

    with AppModel.open(bundle) as model:
        return model.predict(phantom_image(STUDY_SIZE, seed)[0])[0].ravel()


def _echo(port: int) -> int:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDGE")
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status)


def test_send_serve_worklist_sr(xray_bundle, studies, start_server, run_cli, tmp_path):
    import highdicom as hd
    import pydicom

    db, store, sr_dir = tmp_path / "wl.sqlite", tmp_path / "store", tmp_path / "sr"
    server = start_server(["--bundle", xray_bundle, "--db", db, "--store", store, "--sr-dir", sr_dir],
                          report=tmp_path / "serve.json")
    assert _echo(server.port) == 0x0000

    sent = run_cli("xray", "send", *[studies.path(r) for r in ROLES], "--to", server.address, report=True)
    items = {Path(i["file"]).stem: i for i in sent.report["items"]}
    for role in ROLES[:-1]:
        assert items[role]["status"] == "0x0000", items[role]
    truncated_accepted = items["truncated"]["ok"]
    assert truncated_accepted or items["truncated"]["status"] == "0xC210", items["truncated"]
    assert sent.returncode == (0 if truncated_accepted else 1)

    expected_rows = len(ROLES) - (0 if truncated_accepted else 1)
    wait_for(lambda: (r := db_states(db)) and len(r) == expected_rows
             and all(state in ("analysed", "not_analysed") for state, _, _ in r.values()),
             300, "every study to be analysed or not_analysed")
    rows = worklist_json(run_cli, db)
    by = {s["sop_instance_uid_hash"]: s for s in rows}
    row = {role: by[uid_hash(db, studies.uids[role])] for role in ROLES if role != "truncated" or truncated_accepted}

    labels = ["effusion", "pneumothorax", "nodule", "cardiomegaly"]
    urgent_scores, plain_scores = _expected_scores(xray_bundle, URGENT_SEED), _expected_scores(xray_bundle, UNFLAGGED_SEED)
    for role, expected in (("urgent_dx", urgent_scores), ("urgent_j2k", urgent_scores), ("plain_cr_mono1", plain_scores)):
        got = np.array([row[role]["scores"][k] for k in labels])
        assert row[role]["state"] == "analysed", row[role]
        # Same phantom through rescale/VOI/MONOCHROME1/BitsStored/JPEG 2000 → the same scores as the raw image.
        np.testing.assert_allclose(got, expected, atol=0.03, err_msg=role)
    for role in ("urgent_dx", "urgent_j2k", "plain_cr_mono1"):  # stage timings from the C-STORE on (#27)
        assert row[role]["timings_ms"]["receive_ms"] >= 0 and row[role]["timings_ms"]["store_ms"] > 0, row[role]
    for role in ("urgent_dx", "urgent_j2k"):
        assert row[role]["priority"] == "urgent"
        assert {"effusion", "pneumothorax"} <= {f["finding"] for f in row[role]["flags"]}
    assert row["plain_cr_mono1"]["priority"] == "standard" and row["plain_cr_mono1"]["flags"] == []
    assert row["lateral"]["state"] == "not_analysed" and "lateral" in row["lateral"]["reason"]
    assert row["ct"]["state"] == "not_analysed" and "modality CT is not CR/DX" in row["ct"]["reason"]
    assert row["window_error"]["state"] == "not_analysed" and "analysis error" in row["window_error"]["reason"]
    if truncated_accepted:
        assert row["truncated"]["state"] == "not_analysed" and row["truncated"]["reason"]
    for role in ("lateral", "ct", "window_error"):
        assert row[role]["priority"] == "standard"
    # Urgent above every unflagged study; among equals the older first (plain was sent first).
    assert max(row["urgent_dx"]["rank"], row["urgent_j2k"]["rank"]) < row["plain_cr_mono1"]["rank"]
    assert row["plain_cr_mono1"]["rank"] < row["lateral"]["rank"] < row["ct"]["rank"]

    # The SRs: one per analysed study (written just after its flag), joining its study and referencing
    # the source image.
    wait_for(lambda: len(list(sr_dir.glob("*.dcm"))) >= 3, 120, "the SRs of the 3 analysed studies")
    sr_files = sorted(sr_dir.glob("*.dcm"))
    assert len(sr_files) == 3
    model_sha = row["urgent_dx"]["model_sha256"]
    for path in sr_files:
        sr = hd.sr.srread(path)
        source_uid = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        role = next(r for r, uid in studies.uids.items() if uid == source_uid)
        source = pydicom.dcmread(studies.path(role), stop_before_pixels=True)
        assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.SeriesInstanceUID != source.SeriesInstanceUID
        groups = sr.content.get_image_measurement_groups()
        assert [g.tracking_identifier for g in groups] == labels
        flagged = {f["finding"] for f in row[role]["flags"]}
        for group in groups:
            name = group.tracking_identifier
            assert group.source_images[0].referenced_sop_instance_uid == source_uid
            measured = {m.name.meaning: m.value for m in group.get_measurements()}
            assert measured["AI score"] == pytest.approx(row[role]["scores"][name], abs=1e-4)
            assert measured["Threshold Value"] == pytest.approx(0.5)
            (evaluation,) = group.get_qualitative_evaluations()
            assert evaluation.value.meaning == ("Present" if name in flagged else "Absent")
            texts = _texts(group)
            assert texts["Algorithm Version"] == model_sha
            assert texts["Algorithm Name"] == "cxr-densenet-tiny"

    # A resend is a no-op: success status, nothing new on the list, no second SR.  Sent over three
    # associations at once (files dealt round-robin): the report keeps the order given.
    before = {s["sop_instance_uid_hash"]: s for s in worklist_json(run_cli, db)}
    resent = ["urgent_dx", "plain_cr_mono1", "urgent_j2k", "lateral"]
    again = run_cli("xray", "send", *[studies.path(r) for r in resent], "--to", server.address,
                    "--associations", "3", report=True)
    assert again.returncode == 0 and [i["status"] for i in again.report["items"]] == ["0x0000"] * len(resent)
    assert [Path(i["file"]).stem for i in again.report["items"]] == resent
    after = {s["sop_instance_uid_hash"]: s for s in worklist_json(run_cli, db)}
    assert {k: (v["state"], v["scores"], v["attempts"]) for k, v in after.items()} == \
        {k: (v["state"], v["scores"], v["attempts"]) for k, v in before.items()}
    assert len(list(sr_dir.glob("*.dcm"))) == 3

    # Database busy (another writer holds the lock): the C-STORE waits and retries, then succeeds.
    extra = tmp_path / "extra.dcm"
    extra_uid = write_study(extra, seed=4)
    locker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    threading.Timer(2.0, lambda: locker.execute("COMMIT")).start()
    t0 = time.monotonic()
    busy = run_cli("xray", "send", extra, "--to", server.address, report=True)
    assert busy.report["items"][0]["status"] == "0x0000" and time.monotonic() - t0 >= 2.0
    locker.close()
    assert uid_hash(db, extra_uid) in db_states(db)

    shown = {s["sop_instance_uid_hash"]: s["study"] for s in worklist_json(run_cli, db, "--show-accession")}
    assert shown[uid_hash(db, studies.uids["urgent_dx"])] == "ACC-URG"
    assert row["urgent_dx"]["study"] == row["urgent_dx"]["study_hash"][:8]  # hashes unless asked
    table = run_cli("xray", "worklist", "--db", db)
    assert table.returncode == 0 and "urgent" in table.stdout and "lateral" in table.stdout
    assert server.stop(signal.SIGTERM) == 0
    report = json.loads((tmp_path / "serve.json").read_text())
    assert report["received"] == expected_rows + 1 and report["duplicates"] == len(resent)
    assert report["analysed"] >= 3 and report["queued"] == 0

    audit = [json.loads(line) for line in db.with_name(db.name + ".audit.jsonl").read_text().splitlines()]
    assert {"start", "received", "analysed", "not_analysed", "resend_ignored"} <= {a["event"] for a in audit}
    assert all(a["model_sha256"] == model_sha for a in audit if a["event"] == "analysed")
    for text in (server.log, table.stdout, json.dumps(audit), sent.stdout, sent.stderr):
        for phi in PHI + tuple(studies.uids.values()):
            assert phi not in text


def test_disk_nearly_full_and_allowed_callers(xray_bundle, studies, start_server, run_cli, tmp_path):
    db = tmp_path / "wl.sqlite"
    server = start_server(["--bundle", xray_bundle, "--db", db, "--store", tmp_path / "store",
                           "--min-free-mb", "1e12", "--allow", "MODALITY"])
    full = run_cli("xray", "send", studies.path("urgent_dx"), "--to", server.address, "--calling-ae", "MODALITY",
                   report=True)
    assert full.returncode == 1 and full.report["items"][0]["status"] == "0xA700"
    assert "disk nearly full" in full.report["items"][0]["detail"]
    assert worklist_json(run_cli, db) == []
    stranger = run_cli("xray", "send", studies.path("urgent_dx"), "--to", server.address, "--calling-ae", "STRANGER")
    assert_one_line_error(stranger, "did not accept an association")
    assert "disk nearly full" in server.log and server.proc.poll() is None


def test_bad_input_is_one_line(xray_bundle, studies, run_cli, tmp_path):
    assert_one_line_error(run_cli("xray", "send", tmp_path, "--to", "nonsense"), code=2)
    assert_one_line_error(run_cli("xray", "send", studies.path("urgent_dx"), "--to", "PACS@127.0.0.1:1"),
                          "did not accept an association")
    assert_one_line_error(run_cli("xray", "send", studies.path("urgent_dx"), "--to", "PACS@127.0.0.1:1",
                                  "--associations", "0"), "--associations 0", code=2)
    (tmp_path / "x.dcm").write_bytes(b"DICM")
    not_dicom = run_cli("xray", "send", tmp_path / "x.dcm", "--to", "PACS@127.0.0.1:1", report=True)
    assert not_dicom.returncode == 1 and not not_dicom.report["items"][0]["ok"]
    assert "not a readable DICOM file" in not_dicom.report["items"][0]["detail"]
    assert_one_line_error(run_cli("xray", "worklist", "--db", tmp_path / "none.sqlite"), "no worklist database")
    assert_one_line_error(run_cli("xray", "serve", "--bundle", tmp_path / "nope", "--db", tmp_path / "w.sqlite",
                                  "--store", tmp_path / "s"), "not found")
    assert_one_line_error(run_cli("xray", "serve", "--bundle", xray_bundle, "--db", tmp_path / "w.sqlite",
                                  "--store", tmp_path / "s", "--sr-dest", "PACS@host"), "AET@host:port", code=2)
