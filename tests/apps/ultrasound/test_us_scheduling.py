"""`medge ultrasound --rt-priority`: the capture, decode and stage threads run SCHED_FIFO, the view does not.

The threads are read from the running process's /proc (policy and priority are fields 41 and 40 of
``/proc/PID/task/TID/stat``), so the test sees what the kernel schedules, not what the app says.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.cli_checks import assert_one_line_error, medge_command, spawn_medge
from us_fixtures import us_frames, write_mp4

SCHED_FIFO = 1


def _may_use_fifo(priority: int) -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


def _threads(pid: int) -> dict[int, tuple[str, int, int]]:
    """tid → (OS name, policy, real-time priority) of every thread of `pid` (those that vanish are skipped)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (name, int(fields[41 - 3]), int(fields[40 - 3]))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_FIFO and /proc are Linux's")
def test_rt_priority_puts_capture_decode_and_stages_in_sched_fifo(app_bundles, tmp_path):
    import json

    if not _may_use_fifo(3):
        pytest.skip("this user may not use SCHED_FIFO (RLIMIT_RTPRIO 0, no CAP_SYS_NICE); the refusal is tested below")
    video = write_mp4(tmp_path / "loop.mp4", us_frames(90), fps=30)  # 3 s paced: long enough to read /proc
    proc = spawn_medge(["ultrasound", "--segmenter", app_bundles.segmenter, "--screen", app_bundles.screen,
                        "--source", video, "--view", "browser:127.0.0.1:0", "--rt-priority", "3", "--report", tmp_path / "report.json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[int, tuple[str, int, int]] = {}
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            seen.update({tid: t for tid, t in _threads(proc.pid).items() if tid != proc.pid})
            time.sleep(0.05)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    by_name: dict[str, set[tuple[int, int]]] = {}
    for name, policy, priority in seen.values():
        by_name.setdefault(name, set()).add((policy, priority))
    for stage in ("medge-source", "medge-prepare", "medge-screen", "medge-segmen", "medge-overlay"):
        name = next((n for n in by_name if n.startswith(stage)), None)
        assert name is not None, sorted(by_name)
        assert by_name[name] == {(SCHED_FIFO, 3)}, (name, by_name[name])
    decoders = [n for n in by_name if n.startswith("av:")]  # FFmpeg's frame threads, started by the source
    assert all(by_name[n] == {(SCHED_FIFO, 3)} for n in decoders), {n: by_name[n] for n in decoders}
    assert by_name.get("medge-view") == {(0, 0)}, sorted(by_name)  # the web server keeps the normal policy
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["scheduling"] == "SCHED_FIFO 3" and report["frames"]["corrupt"] == 0


def test_rt_priority_refusals_are_one_line_errors(run_cli, app_bundles):
    seg = app_bundles.segmenter
    res = run_cli("ultrasound", "--segmenter", seg, "--source", "synthetic", "--view", "none", "--rt-priority", "0")
    assert_one_line_error(res, "--rt-priority must be in 1..99 (got 0)", code=2)
    res = run_cli("ultrasound", "--segmenter", seg, "--source", "synthetic", "--view", "none", "--frames", "3",
                  "--as-fast-as-possible", "--rt-priority", "5")
    if "may not use real-time scheduling" not in res.stderr:
        assert_one_line_error(res, "--rt-priority is for a paced or live source", code=2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_RTPRIO is Linux's")
def test_rt_priority_without_the_right_is_refused_with_the_fix(app_bundles):
    wrap: list[str] = []
    if os.geteuid() == 0:  # root may always: take CAP_SYS_NICE away (the bounding set bounds root's after exec)
        wrap = ["setpriv", "--bounding-set=-sys_nice", "--"]
        if shutil.which("setpriv") is None or subprocess.run([*wrap, "true"], capture_output=True).returncode != 0:
            pytest.skip("running as root, and setpriv (util-linux, with CAP_SETPCAP) cannot drop CAP_SYS_NICE here")

    def no_rtprio() -> None:
        resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))

    res = subprocess.run([*wrap, *medge_command(), "ultrasound", "--segmenter", str(app_bundles.segmenter),
                          "--source", "synthetic", "--view", "browser:127.0.0.1:0", "--frames", "3",
                          "--rt-priority", "7"], capture_output=True, text=True, timeout=120, preexec_fn=no_rtprio)
    line = assert_one_line_error(res, "--rt-priority 7: this user may not use real-time scheduling", code=2)
    assert "ulimit -r 7" in line and "LimitRTPRIO=7" in line
    assert "browser view at" not in res.stderr  # refused before the view opened its port


def test_drop_hint_tells_a_slow_stage_from_preemption():
    from medge.apps.ultrasound.app import drop_hint

    def stats(dropped: int, **p50: float) -> dict:
        return {"frames": {"dropped": dropped, "in": 300},
                "latency_ms": {"stages": {name: {"p50": ms} for name, ms in p50.items()}}}

    assert drop_hint(stats(0, segment=30.0), 60.0, None) is None
    slow = drop_hint(stats(40, prepare=1.5, segment=21.0), 60.0, None)
    assert slow.startswith("40 of 300 frames dropped: the segment stage takes 21.0 ms") and "16.7 ms" in slow
    preempted = drop_hint(stats(2, prepare=1.5, segment=9.0), 60.0, None)
    assert "every stage is faster than the source's 16.7 ms" in preempted and "--rt-priority" in preempted
    assert drop_hint(stats(2, prepare=1.5, segment=9.0), 60.0, 10) is None  # already FIFO: nothing more to suggest
