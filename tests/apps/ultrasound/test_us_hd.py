"""Issue #25 item 1: the ultrasound app at 1920×1080 and 60 fps (behaviour, not speed: the bench
measures speed).  The analysis keeps the frame's resolution; the view, recording and window draw at
`--view-size`; a browser view encodes JPEG only for a connected client; V4L2 MJPG/YUYV frames become
grey without a colour conversion."""

from __future__ import annotations

import http.client
import threading
import time
from urllib.parse import urlparse

import numpy as np
import pytest

from fixtures.cli_checks import assert_one_line_error
from us_fixtures import RunningApp, us_frames, write_mp4


def _identity(frames: dict) -> None:
    assert frames["in"] == frames["processed"] + frames["screened_out"] + frames["dropped"] + frames["corrupt"], frames


def test_synthetic_1080p_without_a_client_encodes_nothing(run_cli, app_bundles):
    res = run_cli("ultrasound", "--segmenter", app_bundles.segmenter, "--screen", app_bundles.screen,
                  "--screen-threshold", "0", "--source", "synthetic:60:1920x1080", "--frames", "20",
                  "--view", "browser:127.0.0.1:0", "--as-fast-as-possible", "--quiet", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    assert (r["source"]["width"], r["source"]["height"], r["source"]["fps"]) == (1920, 1080, 60)
    assert r["source_events"]["sizes"] == ["1920x1080"]  # every frame that went through was 1920×1080
    assert r["frames"] == {"in": 20, "processed": 20, "screened_out": 0, "dropped": 0, "corrupt": 0}
    assert r["view"]["size"] == [960, 540]  # default: halved until it fits 1280×720
    assert r["view"]["frames_encoded"] == 0 and r["view"]["frames_sent"] == 0  # no client, no JPEG
    assert r["lesion"]["dice_vs_truth_frames"] > 0  # the true masks came at the frame's size
    assert r["models"]["segmenter"]["threads"] >= 1
    assert "960×540 (0 frames sent, 0 encoded)" in res.stdout


class _StreamReader:
    """A client on the view's MJPEG stream: keeps every JPEG part it receives."""

    def __init__(self, url: str) -> None:
        self.parts: list[bytes] = []
        self._url = urlparse(url)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self._url.hostname, self._url.port, timeout=30)
        conn.request("GET", "/stream")
        resp = conn.getresponse()
        while True:
            line = resp.readline()
            if not line:
                return
            if line.lower().startswith(b"content-length:"):
                resp.readline()
                self.parts.append(resp.read(int(line.split(b":")[1])))


def test_mp4_1080p60_paced_with_a_client_at_the_view_size(app_bundles, tmp_path):
    import cv2

    frames = [cv2.resize(f, (1920, 1080)) for f in us_frames(90)]
    video = write_mp4(tmp_path / "hd.mp4", frames, fps=60)
    record = tmp_path / "hd-overlay.avi"
    app = RunningApp(["--segmenter", str(app_bundles.segmenter), "--source", str(video), "--quiet",
                      "--view", "browser:127.0.0.1:0", "--view-size", "640x360", "--record", str(record)],
                     tmp_path / "r.json")
    reader = _StreamReader(app.url)
    report = app.stop(None)  # the file ends by itself
    r = report
    assert (r["source"]["width"], r["source"]["height"]) == (1920, 1080) and r["source"]["fps"] == pytest.approx(60)
    assert r["mode"] == "realtime" and r["frames"]["in"] == 90
    _identity(r["frames"])
    assert r["view"]["size"] == [640, 360]
    deadline = time.monotonic() + 10
    while not reader.parts and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reader.parts, "the client got no frame"
    shape = cv2.imdecode(np.frombuffer(reader.parts[0], np.uint8), cv2.IMREAD_UNCHANGED).shape
    assert shape == (360, 640, 3)  # JPEG at --view-size, not at the frame's size
    assert 1 <= r["view"]["frames_encoded"] <= r["frames"]["processed"] + r["frames"]["screened_out"]
    assert r["latency_ms"]["sinks"]["view"]["count"] >= 1  # acquisition → JPEG, timed for the view
    cap = cv2.VideoCapture(str(record))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (640, 360)
    assert r["record"]["frames"] == r["frames"]["in"] - r["frames"]["dropped"] - r["frames"]["corrupt"]


def test_view_size_and_camera_format_errors(run_cli, app_bundles):
    common = ["ultrasound", "--segmenter", app_bundles.segmenter, "--view", "none", "--quiet"]
    res = run_cli(*common, "--source", "synthetic", "--view-size", "960")
    assert_one_line_error(res, "--view-size '960'", "WxH", code=2)
    res = run_cli(*common, "--source", "/dev/video63", "--camera-format", "H264")
    assert_one_line_error(res, "--camera-format 'H264'", "MJPG or YUYV", code=2)  # before any device is opened
    res = run_cli(*common, "--source", "/dev/video63", "--camera-format", "mjpeg", "--camera-size", "1920x1080",
                  "--fps", "60")
    assert_one_line_error(res, "camera /dev/video63 not found")  # MJPEG accepted; then no device here


def test_v4l2_raw_frames_become_grey_without_colour_conversion():
    import cv2

    from medge.apps.ultrasound.camera import fourcc_text, parse_camera_format, raw_to_grey

    grey = us_frames(1, 64, 48)[0]
    yuyv = np.empty((48, 64, 2), np.uint8)  # what V4L2 gives for YUYV with CONVERT_RGB off: Y U Y V …
    yuyv[..., 0], yuyv[..., 1] = grey, 128
    assert np.array_equal(raw_to_grey(yuyv, "YUYV", 64, 48), grey)
    assert np.array_equal(raw_to_grey(yuyv.reshape(1, -1), "YUYV", 64, 48), grey)  # a flat buffer too
    jpeg = np.frombuffer(cv2.imencode(".jpg", cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))[1].tobytes(), np.uint8)
    decoded = raw_to_grey(jpeg.reshape(1, -1), "MJPG", 64, 48)
    assert decoded.shape == (48, 64) and np.abs(decoded.astype(int) - grey).mean() < 3
    assert raw_to_grey(np.frombuffer(b"not a jpeg" * 4, np.uint8).reshape(1, -1), "MJPG", 64, 48) is None
    assert np.array_equal(raw_to_grey(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), "", 64, 48), grey)  # converted by OpenCV
    assert parse_camera_format("mjpeg") == "MJPG" and parse_camera_format("YUY2") == "YUYV"
    assert fourcc_text(cv2.VideoWriter_fourcc(*"MJPG")) == "MJPG" and fourcc_text(0) == ""


def test_mask_on_the_lesion_box_equals_the_full_frame_resize():
    import cv2

    from medge.apps.ultrasound.overlay import draw_overlay, mask_at_frame

    rng = np.random.default_rng(4)
    for _ in range(10):
        prob = cv2.GaussianBlur(rng.random((64, 64)).astype(np.float32), (0, 0), 3)
        prob = (prob - prob.min()) / (prob.max() - prob.min())
        for height, width in ((1080, 1920), (120, 160), (64, 64), (37, 50)):
            full = (cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR) >= 0.8).astype(np.uint8)
            seg = mask_at_frame(prob, height, width, None, 0.8)
            assert np.count_nonzero(seg.mask != full) <= 2 and seg.area_px == int(seg.mask.sum())
            assert seg.roi.size <= full.size
    image = draw_overlay(np.full((540, 960), 90, np.uint8), seg, frame_number=3, latency_ms=1.0)
    assert image.shape == (540, 960, 3) and (image != 90).any()


def _regions_by_brute_force(prob: np.ndarray, height: int, width: int, threshold: float, min_px: float) -> np.ndarray:
    """The frame mask with the small regions cleared, pixel by pixel: each frame pixel at or above the
    threshold belongs to the model-mask region of its largest bilinear tap; a region's area is the
    count of its frame pixels."""
    import cv2

    full = (cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR) >= threshold).astype(np.uint8)
    _, regions = cv2.connectedComponents((prob >= threshold).astype(np.uint8), connectivity=8)
    owner = np.zeros(full.shape, np.int64)
    rows, cols = prob.shape
    for y, x in zip(*np.nonzero(full)):
        y0 = int(np.clip(np.floor((y + 0.5) * rows / height - 0.5), 0, rows - 1))  # the low tap, as cv2.resize
        x0 = int(np.clip(np.floor((x + 0.5) * cols / width - 0.5), 0, cols - 1))
        taps = [(r, c) for r in (y0, min(y0 + 1, rows - 1)) for c in (x0, min(x0 + 1, cols - 1))]
        owner[y, x] = regions[max(taps, key=lambda t: prob[t])]
    area = np.bincount(owner[full > 0], minlength=int(owner.max()) + 1)
    keep = area >= min_px
    keep[0] = False
    return (full * keep[owner]).astype(np.uint8)


def test_speck_filter_clears_the_small_regions_of_the_model_mask_measured_in_frame_pixels():
    """Regions are the model mask's 8-connected components, measured in frame pixels (their area is
    what the bilinear upsampling gives them): the same mask, pixel for pixel, as assigning every
    frame pixel to its largest tap's region and dropping the small ones by brute force."""
    import cv2

    from medge.apps.ultrasound.overlay import mask_at_frame

    rng = np.random.default_rng(7)
    cases = ((1.2, 30, (300, 400)), (1.0, 12, (300, 400)), (0.7, 5, (300, 400)), (0.6, 400, (300, 400)),
             (0.8, 20, (61, 97)), (1.0, 25, (48, 64)), (0.7, 3, (23, 29)))  # upsampled, the same size, downsampled
    for sigma, min_px, (height, width) in cases:
        prob = cv2.GaussianBlur(rng.random((48, 64)).astype(np.float32), (0, 0), sigma)
        prob = (prob - prob.min()) / (prob.max() - prob.min())
        want = _regions_by_brute_force(prob, height, width, 0.6, min_px)
        plain = (cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR) >= 0.6).astype(np.uint8)
        assert want.sum() < plain.sum(), "the case must have specks to remove"
        seg = mask_at_frame(prob, height, width, None, 0.6, min_px)
        assert np.array_equal(seg.mask, want) and seg.area_px == int(want.sum())


def test_a_region_the_upsampling_splits_is_still_one_lesion():
    """Two model pixels that touch at a corner are one region of the model's mask; the upsampled frame
    mask may split them, but the region's area is the sum of both parts, so neither part is a speck."""
    from medge.apps.ultrasound.overlay import mask_at_frame

    prob = np.zeros((8, 8), np.float32)
    prob[3, 3] = prob[4, 4] = 1.0
    import cv2

    seg = mask_at_frame(prob, 80, 80, None, 0.9, 0)  # unfiltered: the two parts
    parts = seg.area_px
    pieces, _ = cv2.connectedComponents(seg.mask, connectivity=8)
    assert pieces - 1 == 2 and parts > 0  # apart on the frame
    kept = mask_at_frame(prob, 80, 80, None, 0.9, parts)  # the region has exactly that many pixels: kept
    assert kept.area_px == parts and np.array_equal(kept.mask, seg.mask)
    assert mask_at_frame(prob, 80, 80, None, 0.9, parts + 1).area_px == 0


def test_view_encodes_a_frame_only_for_a_client_and_once_for_all():
    from urllib.request import urlopen

    from medge.apps.view import BrowserView, encode_jpeg

    calls = []

    def make() -> bytes:
        calls.append(1)
        return encode_jpeg(np.full((32, 32), 7, np.uint8))

    with BrowserView("127.0.0.1", 0) as view:
        view.publish(make)
        view.publish(make)  # replaced before anyone asked: never made
        assert calls == []
        first = urlopen(view.url + "frame.jpg", timeout=10).read()
        second = urlopen(view.url + "frame.jpg", timeout=10).read()
    assert first == second and len(calls) == 1
