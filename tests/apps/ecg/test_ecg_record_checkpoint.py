"""Issue #20: `medge ecg stream --record` stays valid WFDB throughout: a real `kill -9` of a real
session fed by `medge ecg simulate` over a pty leaves records that `wfdb.rdrecord` reads, holding
every sample up to the last checkpoint, exactly."""

from __future__ import annotations

import subprocess
import time

import numpy as np
from fixtures.cli_checks import spawn_medge

from medge.apps.ecg.recording import CHECKPOINT_S

RATE = 500


def _samples_on_disk(rec) -> int:
    import wfdb

    if not rec.with_name(f"{rec.name}.hea").is_file():
        return 0
    return int(wfdb.rdheader(str(rec)).sig_len)


def test_kill_9_mid_session_leaves_valid_records_up_to_the_last_checkpoint(simulator, ecg_onnx, tmp_path):
    import wfdb

    truth_path, rec = tmp_path / "truth.npz", tmp_path / "rec"
    sim = simulator("--seconds", 40, "--realtime", "--seed", 2, "--ground-truth", truth_path)
    proc = spawn_medge(["ecg", "stream", "--model", ecg_onnx, "--port", sim.link, "--record", rec],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, seen = time.monotonic() + 60, 0
    try:
        while seen < 4 * RATE and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = _samples_on_disk(rec)  # wait until the session has checkpointed a few seconds of signal
        time.sleep(CHECKPOINT_S * 0.7)  # mid-session, between two checkpoints
    finally:
        proc.kill()  # SIGKILL: no handler, no finally, no flush
        err = proc.communicate()[1]
    assert proc.returncode == -9 and seen >= 4 * RATE, (seen, err[-2000:])
    truth = np.load(sim.finish()["ground_truth"])  # the simulator stops when the port's reader is gone

    raw = wfdb.rdrecord(str(rec))
    n = raw.sig_len
    assert raw.sig_name == ["II", "V1", "V5"] and n >= seen
    first = int(raw.comments[0].split("first_sample_index ")[1].split(";")[0])
    sent = truth["samples_uv"][first:first + n]
    np.testing.assert_array_equal(np.round(raw.p_signal * 1000.0), sent)  # every sample up to the checkpoint
    sent_total = int(truth["delivered"].sum())
    lag_s = (sent_total - first - n) / RATE  # what the kill cost: at most a checkpoint interval and a hop
    assert lag_s <= CHECKPOINT_S + 3.0, lag_s

    twelve = wfdb.rdrecord(f"{rec}_12lead")
    assert twelve.sig_name[:3] == ["I", "II", "III"] and 0 < twelve.sig_len <= n
    assert twelve.sig_len >= n - 3 * RATE  # a hop and the cross-fade behind the raw record
    assert np.isfinite(twelve.p_signal).all()
    np.testing.assert_allclose(twelve.p_signal[:, 2], twelve.p_signal[:, 1] - twelve.p_signal[:, 0], atol=2e-3)
    assert any(c.startswith("COMPUTED ECG, NOT FOR DIAGNOSIS") for c in twelve.comments)
    print(f"kill -9 after {seen / RATE:.1f} s on disk: raw record {n / RATE:.2f} s, 12-lead {twelve.sig_len / RATE:.2f} s,"
          f" sent {(sent_total - first) / RATE:.2f} s, lost to the kill {lag_s:.2f} s")
