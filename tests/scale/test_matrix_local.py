"""`medge matrix run` with the local engine: real `medge build` child processes, results, resume, timeout, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from scale_checks import medge, rows, write_matrix

from fixtures.cli_checks import assert_one_line_error, spawn_medge


def _cell_processes(marker: str) -> list[int]:
    """PIDs whose command line mentions `marker` (the cells' own processes and their builds)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_matrix_ok_timeout_unsupported_then_resume(tmp_path, fast_yaml):
    """One cell builds, one times out (and is retried once), one is unsupported; --resume rebuilds only what is not ok."""
    matrix = write_matrix(tmp_path / "m.yaml", f"""
models:
  - us-dct-vit
  - name: stuck
    model: us-dct-vit
    timeout: 1.5
    retries: 1
targets: [local]
precisions: [fp32, fp16]
exclude: [{{model: stuck, precision: fp16}}]
{fast_yaml}""")
    first = medge("matrix", "run", str(matrix), "-o", "out", "--jobs", "2", "--json", cwd=tmp_path)
    assert first.returncode == 1, first.stderr[-3000:]  # a timeout is a failed cell
    report = json.loads(first.stdout)
    final = {r["cell"]: r for r in report["rows"]}
    assert final["us-dct-vit__local__fp32"]["status"] == "ok"
    assert final["us-dct-vit__local__fp32"]["p50_ms"] > 0
    assert final["us-dct-vit__local__fp16"]["status"] == "unsupported"
    assert final["stuck__local__fp32"]["status"] == "timeout"
    attempts = [r for r in rows(tmp_path / "out") if r["cell"] == "stuck__local__fp32"]
    assert [r["attempt"] for r in attempts] == [1, 2] and all(r["status"] == "timeout" for r in attempts)
    assert (tmp_path / "out/cells/us-dct-vit__local__fp32/bundle/manifest.json").exists()
    for name in ("results.md", "results.json", "results.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert "stuck__local__fp32" in (tmp_path / "out/results.md").read_text()
    assert "ETA" in first.stderr
    built = (tmp_path / "out/cells/us-dct-vit__local__fp32/build.json").stat().st_mtime_ns
    n_rows = len(rows(tmp_path / "out"))

    again = medge("matrix", "run", str(matrix), "-o", "out", "--jobs", "2", "--resume", cwd=tmp_path)
    assert again.returncode == 1, again.stderr[-3000:]
    new = rows(tmp_path / "out")[n_rows:]
    assert {r["cell"] for r in new} == {"stuck__local__fp32", "us-dct-vit__local__fp16"}  # ok rows are kept, timeouts never
    assert (tmp_path / "out/cells/us-dct-vit__local__fp32/build.json").stat().st_mtime_ns == built
    assert "1 resumed" in again.stdout

    refused = medge("matrix", "run", str(matrix), "-o", "out", cwd=tmp_path)  # would mix two runs' rows
    assert_one_line_error(refused, "already holds results", "--resume", code=2)


def test_matrix_ctrl_c_ends_cells_and_writes_interrupted_rows(tmp_path, fast_yaml):
    matrix = write_matrix(tmp_path / "m.yaml", f"models: [us-dct-vit]\ntargets: [local]\nprecisions: [fp32]\n{fast_yaml}")
    proc = spawn_medge(["matrix", "run", matrix, "-o", "out"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marker = str(tmp_path / "out" / "cells")
    deadline = time.monotonic() + 60
    while not [p for p in _cell_processes(marker) if p != proc.pid] and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    (row,) = rows(tmp_path / "out")
    assert row["status"] == "interrupted"
    assert "interrupted" in out and (tmp_path / "out/results.md").exists()
    time.sleep(0.5)
    assert _cell_processes(marker) == []  # the cell's process group is gone


@pytest.mark.parametrize("text, needles", [
    ("models: [us-dct-vit]\ntarget: [local]\n", ["unknown key 'target'", "did you mean 'targets'"]),
    ("models: [us-dct-vt]\ntargets: [local]\n", ["unknown zoo model 'us-dct-vt'", "did you mean 'us-dct-vit'"]),
    ("models: [us-dct-vit]\ntargets: [intel-cpus]\n", ["unknown value 'intel-cpus'", "did you mean 'intel-cpu'"]),
    ("models: [us-dct-vit]\ntargets: [local]\nprecisions: [int4]\n", ["unknown value 'int4'"]),
    ("models: [us-dct-vit]\ntargets: [local]\ntimeout: -3\n", ["timeout", "> 0"]),
    ("models: [{model: us-dct-vit, calib: nowhere/}]\ntargets: [local]\n", ["calib", "data not found"]),
    ("models: [us-dct-vit]\ntargets: [local]\nexclude: [{modle: us-dct-vit}]\n", ["unknown key 'modle'", "'model'"]),
    ("models: [us-dct-vit\ntargets: [local]\n", ["not valid YAML"]),
])
def test_bad_matrix_file_is_one_line_and_no_work(tmp_path, text, needles):
    matrix = write_matrix(tmp_path / "m.yaml", text)
    result = medge("matrix", "run", str(matrix), "-o", "out", cwd=tmp_path)
    assert_one_line_error(result, *needles, code=2)
    assert not (tmp_path / "out").exists()


def test_bad_matrix_flags(tmp_path):
    matrix = write_matrix(tmp_path / "m.yaml", "models: [us-dct-vit]\ntargets: [local]\n")
    assert_one_line_error(medge("matrix", "run", str(matrix), "-o", "out", "--only", "modle=x", cwd=tmp_path),
                          "did you mean 'model'", code=2)
    assert_one_line_error(medge("matrix", "run", "missing.yaml", "-o", "out", cwd=tmp_path), "not found", code=2)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_resume_after_the_driver_is_killed(tmp_path, fast_yaml):
    """kill -9 of the driver mid-matrix: its running build dies with it, and --resume builds only what is left."""
    matrix = write_matrix(tmp_path / "m.yaml", f"models: [us-dct-vit, cxr-medvit-kan]\ntargets: [local]\n"
                                               f"precisions: [fp32]\n{fast_yaml}")
    proc = spawn_medge(["matrix", "run", matrix, "-o", "out", "--jobs", "1"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jsonl = tmp_path / "out/results.jsonl"
    deadline = time.monotonic() + 240
    while not (jsonl.exists() and jsonl.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the second cell is building now
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    assert _cell_processes(str(tmp_path / "out" / "cells")) == []  # no orphaned build
    (first,) = rows(tmp_path / "out")
    assert first["status"] == "ok"
    built = (tmp_path / "out/cells" / first["cell"] / "build.json").stat().st_mtime_ns
    again = medge("matrix", "run", str(matrix), "-o", "out", "--jobs", "1", "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    after = rows(tmp_path / "out")
    assert len(after) == 2 and after[1]["cell"] != first["cell"] and after[1]["status"] == "ok"  # one build, not two
    assert (tmp_path / "out/cells" / first["cell"] / "build.json").stat().st_mtime_ns == built
