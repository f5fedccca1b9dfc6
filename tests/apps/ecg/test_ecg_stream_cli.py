"""`medge ecg simulate` → `medge ecg stream` over real pty pairs, checked against the ground truth."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from ecg_checks import runs_of_false
from fixtures.cli_checks import assert_one_line_error
from fixtures.browser import CHROMEDRIVER, CHROMIUM, NO_BROWSER, headless_chromium


@pytest.mark.parametrize("protocol", ["medge", pytest.param("openbci-cyton", marks=pytest.mark.slow)])
def test_simulate_then_stream_records_12_leads(run_cli, simulator, ecg_onnx, tmp_path, protocol):
    import wfdb

    sim = simulator("--seconds", 13, "--protocol", protocol, "--seed", 1)
    rec = tmp_path / "rec"
    res = run_cli("ecg", "stream", "--model", ecg_onnx, "--port", sim.link, "--protocol", protocol, "--seconds", 11,
                  "--record", rec, "--plot", tmp_path / "strip.png", report=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    rate = 500 if protocol == "medge" else 250
    assert r["frames"]["ok"] > 0 and r["frames"]["dropped"] == 0 and r["gaps"] == []
    assert r["samples"]["received"] >= 11 * rate and r["samples"]["missing"] == 0
    assert r["windows"]["reconstructed"] >= 1 and r["reconstruct_ms"]["p50"] > 0
    for key in ("p50", "p99"):
        assert r["latency_ms"][key] is not None
    raw, twelve = wfdb.rdrecord(str(rec)), wfdb.rdrecord(f"{rec}_12lead")
    assert raw.sig_name == ["II", "V1", "V5"] and raw.fs == rate
    assert twelve.sig_name == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert twelve.p_signal.shape[0] == raw.p_signal.shape[0]
    assert np.isfinite(twelve.p_signal).all()  # every received sample reconstructed, the last hop included
    ii = twelve.p_signal[:, 1] - twelve.p_signal[:, 0]
    np.testing.assert_allclose(twelve.p_signal[:, 2], ii, atol=2e-3, equal_nan=True)  # III = II − I
    sim.kill()


def test_corruption_every_sample_exact_or_missing_and_gaps_exact(run_cli, simulator, ecg_onnx, tmp_path):
    import wfdb

    truth_path = tmp_path / "truth.npz"
    sim = simulator("--seconds", 24, "--corrupt-rate", 0.01, "--drop-rate", 0.01, "--seed", 5,
                    "--ground-truth", truth_path)
    rec = tmp_path / "rec"
    res = run_cli("ecg", "stream", "--model", ecg_onnx, "--port", sim.link, "--seconds", 20, "--record", rec,
                  report=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    sim.finish()
    truth = np.load(truth_path)
    r = res.report
    first = r["samples"]["first_sample_index"]
    got = wfdb.rdrecord(str(rec)).p_signal * 1000.0
    n = len(got)
    sent, delivered = truth["samples_uv"][first:first + n], truth["delivered"][first:first + n]
    present = np.isfinite(got).all(axis=1)
    assert np.isnan(got[~present]).all()  # a missing sample is missing in every lead
    np.testing.assert_array_equal(present, delivered)
    assert np.abs(got[present] - sent[present]).max() <= 1.0
    assert r["gaps"] == runs_of_false(delivered, first)
    assert r["samples"]["missing"] == int((~delivered).sum()) and r["samples"]["received"] == int(delivered.sum())
    assert r["frames"]["crc_error"] > 0 and r["windows"]["flagged"] > 0
    # the printed table summarises the gaps (count, missing s, the 10 longest); the JSON keeps them all
    summary = r["gap_summary"]
    assert summary["count"] == len(r["gaps"]) > 10 and summary["missing_samples"] == r["samples"]["missing"]
    assert summary["missing_s"] == round(r["samples"]["missing"] / 500, 3)
    longest = sorted((g["length"] for g in r["gaps"]), reverse=True)[:10]
    assert [g["length"] for g in summary["longest"]] == longest
    assert "gaps[0]" not in res.stdout and f"{len(r['gaps'])} (every gap in the JSON report" in res.stdout
    assert "gap_summary.longest[9].seconds" in res.stdout and "gap_summary.longest[10]" not in res.stdout
    print(f"corruption test: ok {r['frames']['ok']} dropped {r['frames']['dropped']} gaps {len(r['gaps'])} "
          f"missing {r['samples']['missing']} of {n}")


def test_garbage_on_the_line_is_one_line_error(run_cli, ecg_onnx):
    master, slave = os.openpty()
    import tty

    tty.setraw(slave)
    os.set_blocking(master, False)  # once the stream exits nobody reads: never block on a full pty
    stop = threading.Event()

    def noise() -> None:
        rng = np.random.default_rng(0)
        while not stop.is_set():
            try:
                os.write(master, rng.integers(1, 256, 200, dtype=np.uint8).tobytes())
            except BlockingIOError:
                pass
            except OSError:
                return
            time.sleep(0.01)

    thread = threading.Thread(target=noise, daemon=True)
    thread.start()
    try:
        res = run_cli("ecg", "stream", "--model", ecg_onnx, "--port", os.ttyname(slave), "--baud", 9600, timeout=120)
    finally:
        stop.set()
        thread.join()
        os.close(master)
        os.close(slave)
    assert_one_line_error(res, "no valid frames in 5 s: check --baud/--protocol")


def test_stream_usage_errors(run_cli, ecg_onnx, tmp_path):
    res = run_cli("ecg", "stream", "--model", ecg_onnx, "--port", tmp_path / "nope", "--seconds", 1)
    assert_one_line_error(res, "cannot open serial port")
    res = run_cli("ecg", "stream", "--model", ecg_onnx, "--port", "loop://", "--window", 5)
    assert_one_line_error(res, "does not match the model", code=2)
    res = run_cli("ecg", "stream", "--model", "ecg-3to21", "--port", "loop://")
    assert_one_line_error(res, "did you mean")


def test_browser_view_serves_the_live_12_lead_strip(simulator, ecg_onnx, tmp_path):
    import json
    import socket
    import subprocess
    import urllib.request

    import cv2
    from fixtures.cli_checks import spawn_medge

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sim = simulator("--seconds", 7, "--realtime")
    report = tmp_path / "stream.json"
    proc = spawn_medge(["ecg", "stream", "--model", ecg_onnx, "--port", sim.link, "--seconds", "4",
                        "--view", f"browser:127.0.0.1:{port}", "--report", report],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    frame, stats = None, None
    try:
        deadline = time.monotonic() + 60
        while frame is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/frame.jpg", timeout=2) as resp:
                    frame = resp.read()
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2) as resp:
                    stats = json.loads(resp.read())
            except OSError:
                time.sleep(0.2)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert frame is not None, err[-2000:]
    img = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[0] > 12 * 40 and (img < 100).mean() > 0.005  # twelve rows with dark traces
    assert stats["frames"]["ok"] > 0
    assert json.loads(report.read_text())["view"].startswith("http://127.0.0.1:")


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=NO_BROWSER)
def test_the_ecg_page_shows_its_own_summary_line(simulator, ecg_onnx, tmp_path):
    """Issue #22 item 5: the page's summary line is the ECG's own (it read 'frames in undefined, ...')."""
    import socket
    import subprocess

    from fixtures.cli_checks import spawn_medge
    from selenium.webdriver.common.by import By

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sim = simulator("--seconds", 30, "--realtime", "--drop-rate", 0.02)
    proc = spawn_medge(["ecg", "stream", "--model", ecg_onnx, "--port", sim.link, "--view", f"browser:127.0.0.1:{port}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    driver = headless_chromium(tmp_path / "chromium-profile")
    text = ""
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                driver.get(f"http://127.0.0.1:{port}/")
                break
            except Exception:  # noqa: BLE001 - the view is not listening yet
                time.sleep(0.3)
        while time.monotonic() < deadline and "12-lead windows" not in text:
            text = driver.find_element(By.ID, "summary").text
            if "12-lead windows" in text and " gaps 0 " in text:  # wait for a dropped frame to show
                text = ""
            time.sleep(0.2)
    finally:
        driver.quit()
        proc.terminate()
        err = proc.communicate(timeout=60)[1]
    assert "undefined" not in text and "12-lead windows" in text, (text, err[-2000:])
    assert text.startswith("link ok · frames ok ") and "s missing)" in text and "not for diagnosis" in text, text
    print(f"ECG page summary line: {text}")
