"""`medge xray thresholds` on labelled data, `medge xray ingest` offline with those operating points,
and the priority/worklist rules on a real SQLite file."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
from fixtures.cli_checks import assert_one_line_error, medge_command
from xray_helpers import uid_hash, wait_for, worklist_json


def test_thresholds_then_ingest_with_them(xray_bundle, studies, run_cli, tmp_path):
    ops = tmp_path / "ops.json"
    chosen = run_cli("xray", "thresholds", "--bundle", xray_bundle, "--eval", "synthetic:cxr", "--samples", "40",
                     "--sensitivity", "0.9", "-o", ops, report=True)
    assert chosen.returncode == 0, chosen.stderr[-2000:]
    data = json.loads(ops.read_text())
    assert set(data["points"]) == {"effusion", "pneumothorax", "nodule", "cardiomegaly"}
    for name, point in data["points"].items():
        if point["positives"]:
            assert point["sensitivity"] >= 0.9, name
    assert data["points"]["pneumothorax"]["urgent"] and not data["points"]["nodule"]["urgent"]
    assert chosen.report["version"] == data["version"]

    db = tmp_path / "wl.sqlite"
    files = [studies.path(r) for r in ("urgent_dx", "lateral")] + [tmp_path / "ops.json"]
    ingest = run_cli("xray", "ingest", *files, "--bundle", xray_bundle, "--db", db, "--store", tmp_path / "store",
                     "--thresholds", ops, "--sr-dir", tmp_path / "sr", report=True)
    assert ingest.returncode == 0, ingest.stderr[-2000:]
    assert ingest.report["received"] == 2 and ingest.report["analysed"] == 1 and ingest.report["not_analysed"] == 1
    assert ingest.report["thresholds_version"] == data["version"]
    refused = [f for f in ingest.report["files"] if not f["stored"]]
    assert [f["file"] for f in refused] == ["ops.json"] and "not a readable DICOM" in refused[0]["reason"]
    rows = {s["sop_instance_uid_hash"]: s for s in worklist_json(run_cli, db)}
    urgent = rows[uid_hash(db, studies.uids["urgent_dx"])]
    assert urgent["thresholds_version"] == data["version"]
    flagged = {f["finding"] for f in urgent["flags"]}
    assert flagged == {k for k, v in urgent["scores"].items() if v >= data["points"][k]["threshold"]}
    assert len(list((tmp_path / "sr").glob("*.dcm"))) == 1

    # The radiographer's live view refreshes until Ctrl-C, also when started with SIGINT ignored (a background
    # job without job control, as under some CI runners).
    watch = subprocess.Popen(medge_command() + ["xray", "worklist", "--db", str(db), "--watch", "--interval", "0.2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(watch.stdout), daemon=True).start()
    wait_for(lambda: sum("worklist (" in line for line in lines) >= 2, 180, "two refreshes of --watch")
    watch.send_signal(signal.SIGINT)
    assert watch.wait(30) == 0, watch.stderr.read()[-2000:]
    assert any("urgent" in line for line in lines)

    # Ingesting the same files again changes nothing.
    again = run_cli("xray", "ingest", studies.path("urgent_dx"), "--bundle", xray_bundle, "--db", db,
                    "--store", tmp_path / "store", "--thresholds", ops, report=True)
    assert again.report["received"] == 0 and again.report["duplicates"] == 1 and again.report["analysed"] == 0

    # A thresholds file for another model (or edited by hand) is refused.
    data["model_sha256"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(data))
    assert_one_line_error(run_cli("xray", "ingest", studies.path("urgent_dx"), "--bundle", xray_bundle, "--db", db,
                                  "--store", tmp_path / "store", "--thresholds", tmp_path / "other.json"),
                          "was made for model 000000000000")
    assert_one_line_error(run_cli("xray", "thresholds", "--bundle", xray_bundle, "--eval", "synthetic:cxr",
                                  "--sensitivity", "1.5", "-o", tmp_path / "x.json"), "--sensitivity")


def _add(worklist, uid: str, received_at: float, tmp_path) -> None:
    assert worklist.add_received(sop_instance_uid=uid, study_instance_uid=uid + ".9", accession="", modality="DX",
                                 path=tmp_path / f"{uid}.dcm", received_at=received_at)


def test_priority_only_goes_up_and_urgent_first(tmp_path):
    from medge.apps.xray.priority import FLAGGED, OVERDUE, STANDARD, URGENT
    from medge.apps.xray.worklist import Worklist

    wl = Worklist(tmp_path / "wl.sqlite")
    now = time.time()
    for i, uid in enumerate(["1.1", "1.2", "1.3"]):
        _add(wl, uid, now - 100 + i, tmp_path)
    assert not wl.add_received(sop_instance_uid="1.1", study_instance_uid="x", accession="", modality="DX",
                               path=tmp_path / "again.dcm")  # resend: ignored
    assert wl.claim().sop_instance_uid == "1.1"  # all standard: oldest first
    assert wl.mark_overdue(50, OVERDUE, now=now) == [wl.hash("1.1"), wl.hash("1.2"), wl.hash("1.3")]
    assert wl.mark_overdue(50, OVERDUE, now=now) == []  # flagged once
    wl.commit_flag("1.1", scores={"effusion": 0.1}, flags=[], priority=STANDARD, model_sha256="m",
                   thresholds_version="v", timings={"infer_ms": 1.0})
    rows = {r["sop_instance_uid"]: r for r in wl.rows()}
    assert rows["1.1"]["priority"] == OVERDUE  # a standard result never lowers an overdue study
    assert [j.sop_instance_uid for j in wl.sr_to_write()] == ["1.1"] and wl.outbox_pending() == 0
    wl.finish_sr("1.1", sr_sop_instance_uid="2.1", sr_path=tmp_path / "sr", sr_ms=5.0, destinations=["A@h:1"])
    rows = {r["sop_instance_uid"]: r for r in wl.rows()}
    assert rows["1.1"]["sr_state"] == "done" and json.loads(rows["1.1"]["timings"])["sr_ms"] == 5.0
    assert wl.sr_to_write() == [] and rows["1.1"]["priority"] == OVERDUE
    job = wl.claim()
    wl.commit_flag(job.sop_instance_uid, scores={"effusion": 0.9}, flags=["effusion"], priority=URGENT,
                   model_sha256="m", thresholds_version="v", timings={})
    wl.finish_sr(job.sop_instance_uid, sr_sop_instance_uid="2.2", sr_path=tmp_path / "sr2", sr_ms=1.0,
                 destinations=[])
    ranked = [r["sop_instance_uid"] for r in wl.rows()]
    assert ranked[0] == job.sop_instance_uid  # urgent above everything else
    wl.finish_not_analysed("1.3", "lateral view")
    assert {r["sop_instance_uid"]: r["priority"] for r in wl.rows()}["1.3"] == OVERDUE
    assert len(wl.rows()) == 3 and FLAGGED < OVERDUE < URGENT
    assert wl.outbox_pending() == 1
    (item,) = wl.due_outbox()
    wl.outbox_retry(item.id, "down", time.time() + 60)
    assert wl.due_outbox() == [] and wl.outbox_pending() == 1  # waits for its backoff, never dropped
    wl.close()


def test_overload_overdue_first_and_every_wait_visible(tmp_path):
    """Under overload the overdue study is analysed next (not the newest, not dropped), and every row
    shows its wait: so far while queued, the time it spent queued once analysed."""
    from medge.apps.xray.board import study_entries
    from medge.apps.xray.priority import OVERDUE, STANDARD
    from medge.apps.xray.worklist import Worklist

    wl = Worklist(tmp_path / "wl.sqlite")
    now = time.time()
    for i, uid in enumerate(["2.1", "2.2", "2.3", "2.4"]):
        _add(wl, uid, now - 40 + 10 * i, tmp_path)  # 40, 30, 20, 10 s ago
    assert wl.mark_overdue(25, OVERDUE, now=now) == [wl.hash("2.1"), wl.hash("2.2")]
    first = wl.claim()
    wl.commit_flag(first.sop_instance_uid, scores={}, flags=[], priority=STANDARD, model_sha256="m",
                   thresholds_version="v", timings={"queue_ms": 4000.0})
    assert first.sop_instance_uid == "2.1" and wl.claim().sop_instance_uid == "2.2"  # overdue, oldest first
    entries = {e["sop_instance_uid_hash"]: e for e in study_entries(wl.rows(), max_wait_s=25, now=now)}
    assert len(entries) == 4 and entries[wl.hash("2.1")]["wait_s"] == 4.0
    assert [entries[wl.hash(u)]["wait_s"] for u in ("2.2", "2.3", "2.4")] == pytest.approx([30, 20, 10], abs=0.01)
    assert entries[wl.hash("2.1")]["sr"] == "to write"
    wl.close()


def test_requeue_on_start(tmp_path):
    from medge.apps.xray.worklist import Worklist

    wl = Worklist(tmp_path / "wl.sqlite")
    _add(wl, "1.1", time.time(), tmp_path)
    assert wl.claim() is not None and wl.claim() is None
    wl.close()
    _add(wl2 := Worklist(tmp_path / "wl.sqlite"), "1.2", time.time() + 1, tmp_path)
    wl2.close()
    reopened = Worklist(tmp_path / "wl.sqlite")
    assert reopened.requeue_interrupted() == 1
    # The interrupted study is retried (never dropped), behind the study not yet tried.
    assert reopened.claim().sop_instance_uid == "1.2"
    retried = reopened.claim()
    assert retried.sop_instance_uid == "1.1" and retried.attempts == 2
    reopened.close()


@pytest.mark.parametrize("sensitivity", [0.5, 0.9, 1.0])
def test_threshold_at_sensitivity(sensitivity):
    from medge.apps.xray.priority import threshold_at_sensitivity

    rng = np.random.default_rng(0)
    truth = rng.random(400) < 0.3
    scores = np.where(truth, rng.normal(0.7, 0.15, 400), rng.normal(0.3, 0.15, 400))
    point = threshold_at_sensitivity(scores, truth, sensitivity)
    assert point.sensitivity >= sensitivity
    assert np.mean(scores[truth] >= point.threshold) == pytest.approx(point.sensitivity)
    # The highest such threshold: any higher one misses the target.
    positives = np.sort(scores[truth])
    higher = positives[positives > point.threshold]
    if higher.size:
        assert np.mean(scores[truth] >= higher[0]) < sensitivity
    assert threshold_at_sensitivity(scores, np.zeros(400, bool), 0.9) is None
