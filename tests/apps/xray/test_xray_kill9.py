"""kill -9 during a burst of C-STOREs, then a restart: nothing that got a success status is lost.

Three trials on one database: each starts `medge xray serve`, streams studies at it over a real
association and SIGKILLs it mid-burst.  After the last restart every study acknowledged with
0x0000 in any trial is on the worklist, analysed, and its SR has reached the destination SCP.
"""

from __future__ import annotations

import os
import signal
import threading

from xray_helpers import db_states, send_one_by_one, uid_hash, wait_for, worklist_json

KILL_AFTER = (2, 4, 3)  # acknowledged C-STOREs before the SIGKILL, per trial
PER_TRIAL = 10


def _burst_files(folder, trials: int, per_trial: int):
    from medge.apps.xray.phantoms import PhantomSpec, phantom_dataset, phantom_image

    images = [phantom_image(192, seed)[0] for seed in (1, 3, 4)]
    files = []
    for i in range(trials * per_trial):
        path = folder / f"burst{i:03d}.dcm"
        phantom_dataset(PhantomSpec(size=192), image=images[i % 3]).save_as(path, enforce_file_format=True)
        files.append(path)
    return [files[t * per_trial:(t + 1) * per_trial] for t in range(trials)]


def test_kill9_during_burst_loses_no_acknowledged_study(xray_bundle, start_server, sink, run_cli, tmp_path):
    (tmp_path / "burst").mkdir()
    batches = _burst_files(tmp_path / "burst", len(KILL_AFTER), PER_TRIAL)
    db = tmp_path / "wl.sqlite"
    args = ["--bundle", xray_bundle, "--db", db, "--store", tmp_path / "store", "--sr-dest", sink.address]
    acknowledged: set[str] = set()
    trials = []
    for batch, kill_after in zip(batches, KILL_AFTER):
        server = start_server(args)
        statuses: dict[str, int] = {}
        stop = threading.Event()
        sender = threading.Thread(target=send_one_by_one, args=(batch, server.port, statuses, stop), daemon=True)
        sender.start()
        wait_for(lambda s=statuses, k=kill_after, t=sender: len(s) >= k or not t.is_alive(), 180, "the burst to start")
        os.kill(server.proc.pid, signal.SIGKILL)
        assert server.proc.wait(30) == -signal.SIGKILL
        stop.set()
        sender.join(30)
        ok = {uid for uid, status in statuses.items() if status == 0x0000}
        assert len(ok) >= kill_after
        acknowledged |= ok
        trials.append((len(ok), len(batch)))

    # Studies the kill left queued or running show as overdue once past --max-wait.
    waiting = [s for s in worklist_json(run_cli, db, "--max-wait", "0s") if s["queue_state"] in ("received", "running")]
    assert all(s["state"] == "overdue" for s in waiting)

    final = start_server(args)
    wanted = {uid_hash(db, uid) for uid in acknowledged}

    def all_done():
        states = db_states(db)
        return all(h in states and states[h][0] == "analysed" and states[h][2] >= 1 for h in wanted)

    wait_for(all_done, 300, f"{len(wanted)} acknowledged studies to be analysed and their SRs sent")
    rows = {s["sop_instance_uid_hash"]: s for s in worklist_json(run_cli, db)}
    assert all(rows[h]["state"] == "analysed" and rows[h]["sr"] == "sent" for h in wanted)
    assert acknowledged <= set(sink.by_source), "an acknowledged study's SR never reached the destination"
    for uid in acknowledged:  # a resent SR keeps its UID: the PACS sees one SR per image
        assert len({str(ds.SOPInstanceUID) for ds in sink.by_source[uid]}) == 1
    assert final.stop() == 0
    print(f"kill -9 trials (acknowledged/sent per trial): {trials}; lost: 0 of {len(acknowledged)}")


def test_kill9_between_flag_and_sr_writes_and_sends_each_sr_once(xray_bundle, start_server, sink, run_cli, tmp_path):
    """The flag is committed before the SR is written (time-to-flag leaves the SR out).  With the SR
    folder gone, studies are flagged while their SRs stay "to write"; after a kill -9 and a restart
    (folder back) every SR is written and reaches the destination exactly once, with no row lost
    and no flag or priority lowered."""
    (tmp_path / "burst").mkdir()
    (batch,) = _burst_files(tmp_path / "burst", 1, 3)
    db, store = tmp_path / "wl.sqlite", tmp_path / "store"
    args = ["--bundle", xray_bundle, "--db", db, "--store", store, "--sr-dest", sink.address]
    server = start_server(args)
    sr_folder, away = store / "sr", tmp_path / "sr-away"
    sr_folder.rename(away)
    sr_folder.write_bytes(b"")  # a file where the SR folder was: every SR write fails
    statuses: dict[str, int] = {}
    send_one_by_one(batch, server.port, statuses, threading.Event())
    assert len(statuses) == len(batch) and set(statuses.values()) == {0x0000}
    wanted = {uid_hash(db, uid) for uid in statuses}
    wait_for(lambda: all(db_states(db).get(h, ("",))[0] == "analysed" for h in wanted), 180, "the flags")
    audit = db.with_name(db.name + ".audit.jsonl")
    wait_for(lambda: '"sr_write_retry"' in audit.read_text(), 60, "a failed SR write")
    flagged = {s["sop_instance_uid_hash"]: s for s in worklist_json(run_cli, db)}
    assert all(flagged[h]["sr"] == "to write" and "sr_ms" not in flagged[h]["timings_ms"] for h in wanted)
    assert any(flagged[h]["priority"] == "urgent" for h in wanted)
    os.kill(server.proc.pid, signal.SIGKILL)
    assert server.proc.wait(30) == -signal.SIGKILL
    assert not sink.by_source
    sr_folder.unlink()
    away.rename(sr_folder)

    final = start_server(args)
    assert f"{len(wanted)} SRs to write" in final.log
    wait_for(lambda: all(db_states(db)[h][2] == 1 for h in wanted), 180, "the SRs written after the restart to be sent")
    assert final.stop() == 0
    rows = {s["sop_instance_uid_hash"]: s for s in worklist_json(run_cli, db)}
    for h in wanted:
        assert rows[h]["state"] == "analysed" and rows[h]["sr"] == "sent", rows[h]
        assert (rows[h]["priority"], rows[h]["flags"]) == (flagged[h]["priority"], flagged[h]["flags"])
        assert rows[h]["timings_ms"]["sr_after_flag_ms"] >= rows[h]["timings_ms"]["sr_ms"] > 0
    assert set(sink.by_source) == set(statuses)
    assert all(len(sink.by_source[uid]) == 1 for uid in statuses), "an SR reached the destination twice"
