"""Issue #20: a live source that stalls, disappears and changes size, and a video whose frame size
changes, through the real `medge ultrasound` CLI in a subprocess.  The live source is a Motion-JPEG
stream over HTTP on 127.0.0.1 that the test sends (as an IP camera or capture box would)."""

from __future__ import annotations

import threading
import time
import urllib.request

import numpy as np
import pytest

from us_fixtures import CHROMEDRIVER, CHROMIUM, MjpegSender, RunningApp, headless_chromium, us_frames, write_mjpeg

STALL_S = 3.0


def _identity(report: dict) -> None:
    f = report["frames"]
    assert f["in"] == f["processed"] + f["screened_out"] + f["dropped"] + f["corrupt"], f


def _no_signal_card_is_shown(app: RunningApp) -> None:
    """The view's latest frame is the red NO SIGNAL card."""
    import cv2

    with urllib.request.urlopen(app.url + "frame.jpg", timeout=10) as resp:
        card = cv2.imdecode(np.frombuffer(resp.read(), np.uint8), cv2.IMREAD_COLOR)
    h = card.shape[0]
    b, g, r = (card[h // 2 - 3:h // 2 + 3].reshape(-1, 3).astype(int)).T  # a band across the middle
    red = np.mean((r > 150) & (g < 100) & (b < 100))
    assert red > 0.3, red  # mostly the red badge (the rest: its white text and the dimmed last frame)


def _red_badge_frames(video) -> list[bool]:
    """For each frame of `video`: whether its top-right corner holds a red badge."""
    import cv2

    cap, flags = cv2.VideoCapture(str(video)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            return flags
        h, w = frame.shape[:2]
        b, g, r = frame[: h // 3, w // 3:].reshape(-1, 3).astype(int).T
        flags.append(bool(np.mean((r > 150) & (g < 90) & (b < 90)) > 0.02))


def test_live_stream_that_stalls_vanishes_and_changes_size(app_bundles, tmp_path):
    sender = MjpegSender()
    small, big = us_frames(30, 160, 120), us_frames(45, 240, 180)
    opening = threading.Thread(target=lambda: (sender.wait_connected(), sender.send(small[:5])), daemon=True)
    opening.start()  # the app opens the stream at start-up: a few frames must come while it loads
    driver = headless_chromium(tmp_path / "chromium-profile") if CHROMIUM and CHROMEDRIVER else None
    app = RunningApp(["--segmenter", str(app_bundles.segmenter), "--source", sender.url, "--mm-per-px", "0.3",
                      "--frames", "75", "--view", "browser:127.0.0.1:0", "--record", str(tmp_path / "live.avi")],
                     tmp_path / "r.json")  # the default --stall-timeout: 1 s
    try:
        opening.join(60)
        streaming = threading.Thread(target=sender.send, args=(small[5:],), daemon=True)
        streaming.start()  # the stream goes on while the page opens
        if driver is not None:
            driver.get(app.url)
        streaming.join(60)
        t_silent = sender.last_sent
        # 1. the stream stalls for 3 s: no signal in the stats, the card in the view, the badge on the page
        stats = app.wait_stats(lambda s: s["source"]["signal"] is False, timeout=STALL_S)
        assert stats["frames"]["in"] == 30 and stats["source"]["events"] == {"stall": 1}
        _no_signal_card_is_shown(app)
        if driver is not None:
            from selenium.webdriver.common.by import By

            badge = driver.find_element(By.ID, "nosignal")
            while not badge.is_displayed() and time.monotonic() - t_silent < STALL_S:
                time.sleep(0.05)
            assert badge.is_displayed()
        time.sleep(max(0.0, STALL_S - (time.monotonic() - t_silent)))
        # 2. it comes back at another size, then the sender vanishes and comes back on the same port
        sender.send(big[:30])
        sender.vanish()
        app.wait_stats(lambda s: s["source"]["events"].get("reopen_failed", 0) >= 1, timeout=30)
        if driver is not None:
            assert driver.find_element(By.ID, "nosignal").is_displayed()
        sender.come_back()
        sender.wait_connected(30)
        sender.send(big[30:])
    finally:
        if driver is not None:
            driver.quit()
    report = app.stop(None)  # --frames 75: the app ends by itself after the last frame
    counts = report["source_events"]["counts"]
    _identity(report)
    assert report["frames"]["in"] == 75 and report["frames"]["corrupt"] == 0  # nothing lost over TCP
    assert report["mode"] == "live" and not report["stopped_early"]
    assert counts["stall"] == 1 and counts["resize"] == 1 and counts["lost"] == 1 and counts["reopened"] == 1
    assert counts["restored"] == 2 and counts["reopen_failed"] >= 1
    assert report["source_events"]["sizes"] == ["160x120", "240x180"]
    assert report["source_events"]["no_signal_s"] >= STALL_S - 0.3
    assert report["lesion"]["segmented_frames"] == report["frames"]["processed"] > 0
    # the recording: the frames of the first second after each gap carry the red "no signal for N s" badge
    badged = _red_badge_frames(tmp_path / "live.avi")
    assert len(badged) == report["record"]["frames"] == report["frames"]["processed"]
    assert not badged[0] and sum(badged) >= 5, badged
    stderr = "".join(app.stderr)
    assert "no signal from the source (stall)" in stderr and "no signal from the source (lost)" in stderr
    assert "source resize (160×120 → 240×180)" in stderr
    assert "Connection refused" not in stderr and "tcp://" not in stderr and "[http @" not in stderr  # no FFmpeg noise
    print("\nstall/loss/resize run:", report["frames"], report["source_events"],
          [line.split(": ", 1)[1].strip() for line in app.stderr if "source restored" in line])


def test_video_whose_frame_size_changes_is_processed_at_each_size(run_cli, app_bundles, tmp_path):
    """A Motion-JPEG video at 160×120, then the same scene at 240×180: every frame is processed at its
    own size, the resize is counted, and the calibration follows (same field of view, smaller pixels)."""
    import cv2

    small = us_frames(12, 160, 120)
    big = [cv2.resize(f, (240, 180), interpolation=cv2.INTER_LINEAR) for f in small]
    common = ("--segmenter", app_bundles.segmenter, "--view", "none", "--as-fast-as-possible", "--mm-per-px", "0.3",
              "--mask-threshold", "0.01", "--warmup", "0")
    only_small = run_cli("ultrasound", "--source", write_mjpeg(tmp_path / "small.mjpeg", small), *common, report=True)
    assert only_small.returncode == 0, only_small.stderr[-2000:]
    out = tmp_path / "overlay.avi"
    res = run_cli("ultrasound", "--source", write_mjpeg(tmp_path / "both.mjpeg", small + big), *common,
                  "--record", out, report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    _identity(r)
    assert r["frames"] == {"in": 24, "processed": 24, "screened_out": 0, "dropped": 0, "corrupt": 0}
    assert r["source_events"]["counts"] == {"resize": 1} and r["source_events"]["sizes"] == ["160x120", "240x180"]
    assert r["source_events"]["no_signal_s"] == 0  # a file that changes size is not a loss of signal
    assert r["record"]["frames"] == 24 and not r["stopped_early"]
    # the lesion is as large in mm² at 240×180 as at 160×120 (uncalibrated, it would be 2.25 times larger)
    area_small = only_small.report["lesion"]["max_area_mm2"]
    assert area_small > 0
    assert r["lesion"]["max_area_mm2"] == pytest.approx(area_small, rel=0.1)
    print("\nresize run:", r["frames"], r["source_events"])
