"""`medge matrix run … --farm FARM.yaml`: cells are built on the host and profiled on leased farm devices
(real sshd on 127.0.0.1); a device stopped mid-run has its work redone on a healthy one, a target with no
reachable device ends in device_error, and --resume redoes only the device step of those cells."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from fixtures.net import free_port
from scale_checks import farm_yaml, medge, rows, start_sshd, stop_sshd_daemon, write_matrix

from fixtures.cli_checks import assert_one_line_error, spawn_medge


@pytest.fixture(scope="module")
def vit_onnx(tmp_path_factory) -> Path:
    """us-dct-vit exported once (a cell from an .onnx is a quick compile; its profile is the device's job)."""
    folder = tmp_path_factory.mktemp("vit")
    result = medge("export", "us-dct-vit", "-o", str(folder / "vit.onnx"), cwd=folder)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder / "vit.onnx"


@pytest.fixture
def two_sshd(tmp_path):
    servers = [start_sshd(tmp_path / f"sshd{i}") for i in range(2)]
    yield [s for _, s in servers]
    for gen, _ in servers:
        next(gen, None)


def _matrix(tmp_path: Path, onnx: Path, fast_yaml: str, targets: str, extra: str = "") -> Path:
    return write_matrix(tmp_path / "m.yaml", f"""
models:
  - {{name: vit, model: {onnx}}}
  - {{name: vit2, model: {onnx}}}
targets: {targets}
precisions: [fp32]
timeout: 120
{extra}{fast_yaml}""")


def test_matrix_on_a_farm_moves_a_dead_devices_work_and_resumes_device_errors(tmp_path, two_sshd, vit_onnx, fast_yaml):
    # lab-a and lab-b: two "devices" of target local; pi-gone: the only raspberry-pi-5, at a port nobody listens on
    farm_text = farm_yaml(two_sshd, ("lab-a", "lab-b"))
    farm_text += (f"  - {{name: pi-gone, target: raspberry-pi-5, address: 'ssh://me@127.0.0.1:{free_port()}', "
                  f"ssh_key: {two_sshd[0].key}}}\n")
    farm = write_matrix(tmp_path / "farm.yaml", farm_text)
    matrix = _matrix(tmp_path, vit_onnx, fast_yaml, "[local, raspberry-pi-5, jetson-orin-nano]",
                     "exclude: [{model: vit2, target: raspberry-pi-5}, {model: vit2, target: jetson-orin-nano}]\n")
    proc = spawn_medge(["matrix", "run", matrix, "-o", "out", "--farm", farm, "--jobs", "1", "--json"], cwd=tmp_path,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_job = tmp_path / "out/cells/vit__local__fp32/bundle__lab-a__1.log"
    deadline = time.monotonic() + 120
    while not first_job.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    stop_sshd_daemon(two_sshd[1])  # lab-b goes away mid-run, before its first job (the farm spreads the work)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err[-3000:]  # devices failed
    assert "Traceback" not in err
    report = json.loads(out)
    assert sorted(report["unhealthy"]) == ["lab-b", "pi-gone"]
    final = {r["cell"]: r for r in report["rows"]}
    assert set(final) == {"vit__local__fp32", "vit__raspberry-pi-5__fp32", "vit__jetson-orin-nano__fp32",
                          "vit2__local__fp32"}  # every cell has its row
    for cell in ("vit__local__fp32", "vit2__local__fp32"):
        assert final[cell]["status"] == "ok" and final[cell]["node"] == "lab-a" and final[cell]["p50_ms"] > 0
        assert not (tmp_path / "out/cells" / cell / "profile.json").exists()  # the host did not profile it
    attempts = [r for r in rows(tmp_path / "out") if r["cell"] == "vit2__local__fp32"]
    assert [(r["status"], r["node"]) for r in attempts] == [("device_error", "lab-b"), ("ok", "lab-a")]
    assert attempts[1]["moved_from"] == "lab-b"
    pi = final["vit__raspberry-pi-5__fp32"]
    assert pi["status"] == "device_error" and "no healthy device of raspberry-pi-5" in pi["error"]
    jetson = final["vit__jetson-orin-nano__fp32"]
    assert jetson["status"] == "unsupported" and "no SSH device of target 'jetson-orin-nano'" in jetson["error"]
    assert not (tmp_path / "out/cells/vit__jetson-orin-nano__fp32").exists()  # no work for it
    assert "lab-a" in (tmp_path / "out/results.md").read_text()
    compiled = (tmp_path / "out/cells/vit__raspberry-pi-5__fp32/compile.json").stat().st_mtime_ns
    n_rows = len(rows(tmp_path / "out"))

    again = medge("matrix", "run", str(matrix), "-o", "out", "--farm", str(farm), "--resume", "--json", cwd=tmp_path)
    assert again.returncode == 1, again.stderr[-3000:]  # pi-gone is still gone
    new = rows(tmp_path / "out")[n_rows:]
    redone = {r["cell"] for r in new if r["status"] != "unsupported"}
    assert redone == {"vit__raspberry-pi-5__fp32"} and all(r["status"] == "device_error" for r in new if r["cell"] in redone)
    assert (tmp_path / "out/cells/vit__raspberry-pi-5__fp32/compile.json").stat().st_mtime_ns == compiled  # not rebuilt
    assert json.loads(again.stdout)["skipped"] == 2


@pytest.mark.parametrize("text, needles", [
    ("devices:\n  - {name: a, target: local, adress: 'ssh://u@h'}\n", ["unknown key 'adress'", "did you mean 'address'"]),
    ("devices:\n  - {name: a, target: jetson-orin-nan, address: 'ssh://u@h'}\n", ["did you mean 'jetson-orin-nano'"]),
])
def test_matrix_with_a_bad_farm_file_is_one_line_and_no_work(tmp_path, text, needles, fast_yaml):
    matrix = write_matrix(tmp_path / "m.yaml", f"models: [us-dct-vit]\ntargets: [local]\n{fast_yaml}")
    farm = write_matrix(tmp_path / "farm.yaml", text)
    assert_one_line_error(medge("matrix", "run", str(matrix), "-o", "out", "--farm", str(farm), cwd=tmp_path),
                          *needles, code=2)
    assert_one_line_error(medge("matrix", "run", str(matrix), "-o", "out", "--farm", "nowhere.yaml", cwd=tmp_path),
                          "not found", code=2)
    assert not (tmp_path / "out").exists()


def test_cell_timeout_and_farm_timeout_on_the_device_step(tmp_path, two_sshd, vit_onnx, fast_yaml):
    """A device that answers slowly: past the cell's own timeout the cell is `timeout` (the device stays healthy);
    past the farm's device timeout it is the device's fault (device_error, unhealthy)."""
    hung = tmp_path / "hung-medge"
    hung.write_text("#!/bin/sh\nsleep 20\nexit 1\n")  # a device that hangs (then gives up)
    hung.chmod(0o755)
    farm_text = farm_yaml(two_sshd[:1], ("hung",)).replace(f"remote_medge: {two_sshd[0].medge}", f"remote_medge: {hung}")
    for name, cell_timeout, farm_timeout in (("own", 8, 60), ("device", 60, 4)):
        farm = write_matrix(tmp_path / f"farm-{name}.yaml", farm_text.replace("timeout: 60", f"timeout: {farm_timeout}"))
        matrix = _matrix(tmp_path, vit_onnx, fast_yaml, "[local]", "exclude: [{model: vit2}]\n")
        matrix.write_text(matrix.read_text().replace("timeout: 120", f"timeout: {cell_timeout}"))
        result = medge("matrix", "run", str(matrix), "-o", name, "--farm", str(farm), "--json", cwd=tmp_path, timeout=120)
        assert result.returncode == 1, result.stderr[-3000:]
        report = json.loads(result.stdout)
        (row,) = report["rows"]
        if name == "own":
            assert row["status"] == "timeout" and "the job's own timeout" in row["error"] and report["unhealthy"] == []
        else:
            assert row["status"] == "device_error" and report["unhealthy"] == ["hung"]
            assert [r["status"] for r in rows(tmp_path / name)] == ["device_error", "device_error"]  # the try, no device left


@pytest.mark.slow  # an embedded Ray starts (~40 s here); tests/scale/test_matrix_ray.py keeps a real Ray test in the default suite
def test_matrix_on_a_farm_with_the_ray_engine(tmp_path, two_sshd, vit_onnx, fast_yaml):
    """--engine ray builds the cell in a Ray task; the driver runs its device step on the farm."""
    pytest.importorskip("ray")
    farm = write_matrix(tmp_path / "farm.yaml", farm_yaml(two_sshd[:1], ("lab-a",)))
    matrix = _matrix(tmp_path, vit_onnx, fast_yaml, "[local, jetson-orin-nano]", "exclude: [{model: vit2}]\n")
    result = medge("matrix", "run", str(matrix), "-o", "out", "--farm", str(farm), "--engine", "ray", "--jobs", "1",
                   "--json", cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]  # the jetson cell is unsupported (an answer, not a failure)
    final = {r["cell"]: r for r in json.loads(result.stdout)["rows"]}
    local = final["vit__local__fp32"]
    assert local["status"] == "ok" and local["node"] == "lab-a" and local["engine"] == "ray" and local["p50_ms"] > 0
    assert local["build_node"] and local["build_node"] != "lab-a"  # the Ray node that built it
    assert final["vit__jetson-orin-nano__fp32"]["status"] == "unsupported"
