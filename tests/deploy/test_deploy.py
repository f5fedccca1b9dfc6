"""`medge deploy` end to end against a real sshd on 127.0.0.1 with `--supervisor none` (a pidfile):
copy by hash, verify, start, health through an SSH tunnel, --status, roll back on a failed health
check, --stop; the systemd unit of --dry-run passes `systemd-analyze verify`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_checks import ssh_args
from fixtures.net import free_port
from fixtures.cli_checks import assert_one_line_error, medge_command, run_medge


def _medge(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return run_medge(list(args), timeout=timeout)


def _report(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout)


def test_deploy_pidfile_end_to_end(sshd, seg_bundle, tmp_path):
    port = free_port()
    base = ["--app", "ultrasound", "--supervisor", "none", "--remote-dir", str(tmp_path / "device"), *ssh_args(sshd)]
    app = ["--", "--source", "synthetic:10:96x96", "--view", f"browser:127.0.0.1:{port}"]
    try:
        first = _medge("deploy", str(seg_bundle), *base, "--json", *app)
        assert first.returncode == 0, first.stderr[-2000:]
        report = _report(first)
        steps = {s["name"]: s for s in report["steps"]}
        assert list(steps) == ["connect", "check", "copy", "verify", "install", "start", "health", "record"]
        assert all(s["status"] == "ok" and s["seconds"] >= 0 for s in steps.values())
        assert report["health"]["ok"] and "/stats answered 200" in report["health"]["detail"]
        remote = Path(report["remote_bundle"])
        assert sorted(p.name for p in remote.iterdir()) == sorted(p.name for p in seg_bundle.iterdir())
        assert oct((tmp_path / "device" / "ultrasound" / "state").stat().st_mode & 0o777) == "0o700"

        status = _report(_medge("deploy", "--status", *base, "--json"))
        assert status["state"].startswith("running") and status["health"]["ok"], status
        assert status["deployed"]["manifest_sha256"] == report["manifest_sha256"]

        # An interrupted copy: one file gone, one half-written; only those two are sent again.
        (remote / "model.onnx").unlink()
        (remote / "manifest.json").write_text("{")
        again = _report(_medge("deploy", str(seg_bundle), *base, "--json", *app))
        copy = next(s for s in again["steps"] if s["name"] == "copy")["detail"]
        assert again["ok"] and "unchanged" in copy and "sent 0 B" not in copy, (copy, again.get("error"))
        assert (remote / "model.onnx").read_bytes() == (seg_bundle / "model.onnx").read_bytes()

        # A deploy whose app fails its health check rolls back: the previous deployment runs again.
        bad = _medge("deploy", str(seg_bundle), *base, "--health-timeout", "20", "--",
                     "--source", str(tmp_path / "no-such.mp4"), "--view", f"browser:127.0.0.1:{port}")
        assert_one_line_error(bad, "deploy step 'health' failed",
                              "previous deployment", "runs again and answers its health check")  # checked, not assumed
        status = _report(_medge("deploy", "--status", *base, "--json"))
        assert status["state"].startswith("running") and status["health"]["ok"], status
    finally:
        stopped = _medge("deploy", "--stop", *base, "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert _report(stopped)["state"] == "stopped"
    assert _report(_medge("deploy", "--status", *base, "--json"))["state"].startswith("stopped")


def test_deploy_dry_run_and_systemd_unit(seg_bundle, tmp_path):
    proc = _medge("deploy", str(seg_bundle), "--device", "ssh://nvidia@jetson.invalid", "--app", "ultrasound",
                  "--dry-run", "--json", "--", "--source", "/dev/video0", "--rt-priority", "20")
    assert proc.returncode == 0, proc.stderr
    steps = {s["name"]: s for s in _report(proc)["steps"]}
    assert list(steps) == ["connect", "check", "copy", "verify", "engine", "install", "start", "health", "record"]
    assert all(s["status"] == "dry-run" for s in steps.values())
    unit = steps["install"]["detail"].split(":\n", 1)[1]
    for line in ("Restart=on-failure", "User=medge-ultrasound", "StateDirectoryMode=0700", "StandardOutput=journal",
                 "--source /dev/video0", "--rt-priority 20", "LimitRTPRIO=20"):  # the app's SCHED_FIFO is allowed
        assert line in unit
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    medge = shutil.which("medge") or medge_command()[0]
    path = tmp_path / "medge-ultrasound.service"
    path.write_text(unit.replace("ExecStart=medge ", f"ExecStart={medge} "))
    check = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in check.stderr.splitlines() if str(path.name) in ln and "User=" not in ln]
    assert not problems, check.stderr


def test_deploy_bad_input_is_one_line(seg_bundle, tmp_path):
    assert_one_line_error(_medge("deploy", str(tmp_path), "--device", "ssh://h", "--app", "xray", "--dry-run"),
                          "not a bundle folder", code=2)
    assert_one_line_error(_medge("deploy", str(seg_bundle), "--device", "ssh://h", "--app", "xray", "--dry-run",
                                 "--", "--bundle", "x"), "leave --bundle out", code=2)
    assert_one_line_error(_medge("deploy", "--status", str(seg_bundle), "--device", "ssh://h", "--app", "xray"),
                          "leave out the bundle", code=2)
