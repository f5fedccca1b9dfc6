"""The device farm against three real sshd on 127.0.0.1: `medge farm ls` and `medge profile … --farm`,
with one device stopped mid-run (its work is redone on a healthy device of the same target)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from scale_checks import farm_yaml, medge, profile_conftest, start_sshd, stop_sshd_daemon, write_matrix

from fixtures.cli_checks import assert_one_line_error, spawn_medge


@pytest.fixture
def three_sshd(tmp_path):
    servers = []
    for i in range(3):
        servers.append(start_sshd(tmp_path / f"sshd{i}"))
    yield [s for _, s in servers]
    for gen, _ in servers:
        next(gen, None)  # stops that sshd (already stopped ones too)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    """Two tiny ONNX models (the profile tests' artifacts), profiled with --target local."""
    tiny = profile_conftest.cached_build(tmp_path_factory.getbasetemp().parent)
    return [tiny.onnx, tiny.onnx_other]


def test_farm_profile_moves_a_dead_devices_work(tmp_path, three_sshd, models):
    farm = write_matrix(tmp_path / "farm.yaml", farm_yaml(three_sshd, ("lab-a", "lab-b", "lab-c")))
    listed = medge("farm", "ls", str(farm), "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    items = json.loads(listed.stdout)["items"]
    assert [i["reachable"] for i in items] == ["yes"] * 3 and {i["lease"] for i in items} == {"free"}
    assert "CPUs" in items[0]["facts"]

    proc = spawn_medge(["profile", *models, "--farm", farm, "--target", "local", "--runs", "5",
                        "--warmup", "1", "--layers", "0", "--farm-output", "fp", "--json"],
                       cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # the run has begun: lab-c's first job is starting; stop lab-c's sshd now
    stop_sshd_daemon(three_sshd[2])
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err[-3000:]  # a device failed
    assert "Traceback" not in err
    report = json.loads(out)
    rows = report["rows"]
    assert report["unhealthy"] == ["lab-c"]
    failed = [r for r in rows if r["device"] == "lab-c" and r["status"] != "ok"]
    assert failed, rows
    moved = [r for r in rows if r["moved_from"] == "lab-c"]
    # every job lab-c did not finish was redone on a healthy device of the same target
    done_on_c = {r["bundle"] for r in rows if r["device"] == "lab-c" and r["status"] == "ok"}
    assert {r["bundle"] for r in moved if r["status"] == "ok"} == {"tiny.onnx", "other.onnx"} - done_on_c
    assert all(r["device"] in ("lab-a", "lab-b") and r["p50_ms"] > 0 for r in moved)
    for name in ("tiny.onnx", "other.onnx"):
        for device in ("lab-a", "lab-b"):
            assert any(r["bundle"] == name and r["device"] == device and r["status"] == "ok" for r in rows)
    assert (tmp_path / "fp/farm_profile.json").exists() and (tmp_path / "fp/farm_latency.png").stat().st_size > 0


def test_farm_lease_busy_and_unreachable(tmp_path):
    """A device leased by another process shows busy; a dead address is unreachable; ls never fails on them."""
    port = profile_conftest.free_port()
    farm = write_matrix(tmp_path / "farm.yaml", f"devices:\n  - {{name: gone, target: local, address: 'ssh://me@127.0.0.1:{port}'}}\n")
    from medge.scale.farm import Lease, load_farm

    loaded = load_farm(farm)
    holder = subprocess.Popen(["python", "-c", "import fcntl,sys,time; f=open(sys.argv[1],'w'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); f.write('test holder'); f.flush(); print('ok', flush=True); "
                               "time.sleep(60)", str(Lease(loaded, loaded.devices[0]).path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        listed = medge("farm", "ls", str(farm), "--json", cwd=tmp_path)
        (item,) = json.loads(listed.stdout)["items"]
        assert item["reachable"] == "no" and item["lease"].startswith("busy") and "test holder" in item["lease"]
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("text, needles", [
    ("devices:\n  - {name: a, target: jetson-orin-nan, address: 'ssh://u@h'}\n", ["did you mean 'jetson-orin-nano'"]),
    ("devices:\n  - {name: a, target: local, adress: 'ssh://u@h'}\n", ["unknown key 'adress'", "did you mean 'address'"]),
    ("devices:\n  - {name: a, target: local, address: 'http://h'}\n", ["bad device 'http://h'"]),
    ("devices:\n  - {name: a, target: local}\n", ["address: ssh://", "or ray:"]),
    ("device:\n  - {name: a, target: local, address: 'ssh://u@h'}\n", ["did you mean 'devices'"]),
])
def test_bad_farm_file_is_one_line_and_no_work(tmp_path, text, needles, models):
    farm = write_matrix(tmp_path / "farm.yaml", text)
    assert_one_line_error(medge("farm", "ls", str(farm), cwd=tmp_path), *needles, code=2)
    result = medge("profile", str(models[0]), "--farm", str(farm), "--farm-output", "fp", cwd=tmp_path)
    assert_one_line_error(result, *needles, code=2)
    assert not (tmp_path / "fp").exists()
