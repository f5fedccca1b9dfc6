"""The device set installs into a fresh venv without torch, and an app runs end to end there.

Slow (a fresh `pip install` of numpy, scipy, onnx, onnxruntime and the apps' packages): CI runs it
as its own step in `.ci/run`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.cli_checks import medge_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_device_venv_runs_ecg_stream_without_torch(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    install = subprocess.run([*pip, "install", "-q", "-c", str(ROOT / "constraints.txt"), f"{ROOT}[apps,onnxruntime]"],
                             capture_output=True, text=True, timeout=1500)
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([*pip, "list"], capture_output=True, text=True, check=True).stdout.lower()
    assert "torch" not in listed and "opencv" not in listed and "onnxruntime" in listed

    # The zoo model's ONNX comes from the workstation (this environment) into the device's cache.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    medge = str(venv / "bin" / "medge")
    missing = subprocess.run([medge, "ecg", "stream", "--model", "ecg-3to12", "--port", str(tmp_path / "p")],
                             capture_output=True, text=True, env=env, timeout=120)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr and "medge export ecg-3to12" in missing.stderr
    cached = tmp_path / "cache" / "medge" / "apps" / "ecg-3to12.onnx"
    cached.parent.mkdir(parents=True)
    subprocess.run(medge_command() + ["export", "ecg-3to12", "-o", str(cached)], check=True, capture_output=True, timeout=600)

    port = tmp_path / "patch"
    sim = subprocess.Popen([medge, "ecg", "simulate", "--port", f"pty:{port}", "--seconds", "12", "--realtime"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not port.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        stream = subprocess.run([medge, "ecg", "stream", "--model", "ecg-3to12", "--port", str(port), "--seconds", "6",
                                 "--record", str(tmp_path / "rec"), "--json"],
                                capture_output=True, text=True, env=env, timeout=300)
    finally:
        sim.terminate()
        sim.wait(timeout=30)
    assert stream.returncode == 0, stream.stderr[-3000:]
    report = json.loads(stream.stdout)
    assert report["windows"]["reconstructed"] >= 3
    assert (tmp_path / "rec_12lead.hea").is_file()
