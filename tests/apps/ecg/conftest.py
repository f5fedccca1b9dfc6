"""Fixtures for the ECG app tests: the exported zoo model, a background simulator, WFDB records."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from fixtures.cli_checks import spawn_medge

REPO = Path(__file__).resolve().parents[3]




@pytest.fixture(scope="session")
def ecg_onnx(zoo_onnx) -> Path:
    """The zoo ecg-3to12 model exported to ONNX once per session."""
    return zoo_onnx("ecg-3to12", dynamic_batch=False)


class Simulator:
    """`medge ecg simulate --port pty:LINK …` running in the background."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.link = tmp / f"patch-{time.monotonic_ns()}"
        self.report = tmp / f"sim-{time.monotonic_ns()}.json"
        cmd = ["ecg", "simulate", "--port", f"pty:{self.link}", "--report", str(self.report), *args]
        self.proc = spawn_medge(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONHASHSEED="0"))
        deadline = time.monotonic() + 60
        while not self.link.is_symlink():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"simulator did not start: {self.proc.communicate()[1][-2000:]}")
            time.sleep(0.05)

    def finish(self, timeout: float = 60) -> dict:
        """Wait for the simulator and return its JSON report."""
        _, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err[-2000:]
        return json.loads(self.report.read_text())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def simulator(tmp_path):
    """`simulator(*args) -> Simulator`; every simulator is stopped at the end of the test."""
    started: list[Simulator] = []

    def start(*args: str) -> Simulator:
        sim = Simulator(tmp_path, *[str(a) for a in args])
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.kill()


@pytest.fixture
def twelve_lead_records(tmp_path):
    """`twelve_lead_records(n, seconds=10, rate=500) -> folder` of synthetic 12-lead WFDB records."""
    def make(n: int, seconds: float = 10.0, rate: float = 500.0, seed: int = 0) -> Path:
        from medge.apps.ecg.io_wfdb import write_ecg
        from medge.apps.ecg.sources import synthetic_record
        from medge.calibration.preprocess import resample_signal

        folder = tmp_path / f"records-{n}-{seed}"
        for k in range(n):
            rec = synthetic_record(seconds, seed + k)
            write_ecg(folder / f"rec{k:03d}", rec.leads, resample_signal(rec.signal_mv, rec.rate_hz, rate), rate)
        return folder

    return make
