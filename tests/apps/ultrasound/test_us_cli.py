"""`medge ultrasound` end to end through the CLI with real bundles (ONNX Runtime + OpenVINO)."""

from __future__ import annotations

import json
import socket

import pytest

from fixtures.cli_checks import assert_one_line_error
from us_fixtures import PATIENT_ID, PATIENT_NAME, us_frames, write_cine, write_mp4, write_png_folder

LATENCY_KEYS = {"p50", "p95", "p99", "max"}


def _check_report(report: dict, *, stages: list[str]) -> None:
    for key in ("source", "models", "frames", "fps", "latency_ms"):
        assert key in report, key
    assert {"kind", "fps", "frames", "width", "height", "mm_per_px"} <= set(report["source"])
    for model in report["models"].values():
        assert {"artifact", "runtime", "device"} <= set(model)
    f = report["frames"]
    assert set(f) == {"in", "processed", "dropped", "screened_out", "corrupt"}
    assert f["in"] == f["processed"] + f["screened_out"] + f["dropped"] + f["corrupt"], f
    assert LATENCY_KEYS <= set(report["latency_ms"]["end_to_end"])
    assert set(report["latency_ms"]["stages"]) == set(stages)
    for s in report["latency_ms"]["stages"].values():
        assert LATENCY_KEYS <= set(s)


def test_synthetic_with_screen_as_fast_as_possible(run_cli, app_bundles):
    res = run_cli("ultrasound", "--segmenter", app_bundles.segmenter, "--screen", app_bundles.screen,
                  "--screen-threshold", "0", "--source", "synthetic:30:160x120", "--frames", "40", "--view", "none",
                  "--as-fast-as-possible", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    _check_report(r, stages=["prepare", "screen", "segment", "overlay"])
    assert r["frames"] == {"in": 40, "processed": 40, "screened_out": 0, "dropped": 0, "corrupt": 0}
    assert r["mode"] == "as-fast-as-possible" and r["fps"] > 0
    assert r["source"]["kind"] == "synthetic" and (r["source"]["width"], r["source"]["height"]) == (160, 120)
    assert r["models"]["segmenter"]["runtime"] == "onnxruntime" and r["models"]["screen"]["runtime"] == "openvino"
    assert r["latency_ms"]["end_to_end"]["p50"] > 0 and r["lesion"]["segmented_frames"] == 40
    assert 0 < r["lesion"]["dice_vs_truth_frames"] <= 40 and 0.0 <= r["lesion"]["dice_vs_truth_median"] <= 1.0
    assert "frames" in res.stdout and "latency end to end" in res.stdout  # the summary table


def test_mp4_screened_out_and_recorded(run_cli, app_bundles, tmp_path):
    import cv2

    video = write_mp4(tmp_path / "loop.mp4", us_frames(24), fps=25)
    out = tmp_path / "overlay.mp4"
    res = run_cli("ultrasound", "--segmenter", app_bundles.segmenter, "--screen", app_bundles.screen,
                  "--screen-threshold", "1", "--source", video, "--view", "none", "--as-fast-as-possible",
                  "--record", out, "--mm-per-px", "0.25", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    _check_report(r, stages=["prepare", "screen", "segment", "overlay"])
    assert r["frames"] == {"in": 24, "processed": 0, "screened_out": 24, "dropped": 0, "corrupt": 0}
    assert r["source"]["fps"] == pytest.approx(25) and r["source"]["frames"] == 24 and r["source"]["mm_per_px"] == 0.25
    assert r["record"] == {"path": str(out), "frames": 24}
    cap = cv2.VideoCapture(str(out))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 24 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 160
    assert not list(tmp_path.glob(".overlay*"))  # no partial file left beside it


def test_dicom_cine_region_spacing_pacing_and_no_phi(run_cli, app_bundles, tmp_path):
    vector = [0] + [30] * 14
    cine = write_cine(tmp_path / "cine.dcm", us_frames(15), frame_time_ms=None, frame_time_vector_ms=vector,
                      region=(8, 4, 151, 115), delta_cm=0.015, burned_in=True)
    res = run_cli("ultrasound", "--segmenter", app_bundles.segmenter, "--source", cine, "--view", "none",
                  "--mask-threshold", "0.01", "--warmup", "2", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    _check_report(r, stages=["prepare", "segment", "overlay"])
    assert r["source"]["kind"] == "dicom" and r["source"]["frames"] == 15
    assert (r["source"]["width"], r["source"]["height"]) == (144, 112)
    assert r["source"]["mm_per_px"] == pytest.approx(0.15) and r["source"]["fps_from"] == "FrameTimeVector"
    assert r["mode"] == "realtime" and r["elapsed_s"] >= 14 * 0.030 * 0.9  # paced by the vector
    assert r["frames"]["in"] == 15 and r["frames"]["corrupt"] == 0
    assert "max_area_mm2" in r["lesion"]  # calibrated: area in mm²
    assert any("Burned In Annotation" in w for w in r["warnings"]) and "Burned In Annotation" in res.stderr
    text = res.stdout + res.stderr + json.dumps(r)
    for phi in (PATIENT_NAME, PATIENT_ID, "Doe", "19700101"):
        assert phi not in text


def test_overdriven_folder_drops_frames_and_counts_a_corrupt_one(run_cli, app_bundles, tmp_path):
    """A source far faster than the slowest stage: frames are dropped (latest wins), never queued."""
    folder = write_png_folder(tmp_path / "frames", us_frames(150, 320, 240), corrupt_at=7)
    res = run_cli("ultrasound", "--segmenter", app_bundles.segmenter, "--source", folder, "--fps", "20000",
                  "--threads", "1", "--view", "none", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    _check_report(r, stages=["prepare", "segment", "overlay"])
    assert r["frames"]["in"] == 150 and r["frames"]["corrupt"] == 1
    assert r["frames"]["dropped"] > 0
    assert sum(v for k, v in r["drops"].items() if not k.startswith("sink:")) == r["frames"]["dropped"]
    hint = next(w for w in r["warnings"] if "frames dropped" in w)  # why, and what to do
    assert f"{r['frames']['dropped']} of 150 frames dropped: the " in hint and "than the source's 0.05 ms" in hint


def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def test_bad_inputs_are_one_line_errors(run_cli, app_bundles, tmp_path):
    seg, screen = app_bundles.segmenter, app_bundles.screen
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 4000)
    no_pixels = write_cine(tmp_path / "nopix.dcm", us_frames(2), pixel_data=False)
    from pydicom.data import get_testdata_file

    sr = get_testdata_file("test-SR.dcm")
    taken = _taken_port()
    cases = [
        (("--segmenter", seg, "--source", garbage), "cannot read video broken.mp4"),
        (("--segmenter", seg, "--source", "/dev/video99"), "camera /dev/video99 not found"),
        (("--segmenter", seg, "--source", "camera:98"), "camera /dev/video98 not found"),
        (("--segmenter", seg, "--source", no_pixels), "has no pixel data"),
        (("--segmenter", seg, "--source", sr), "is not an image"),
        (("--segmenter", screen, "--source", "synthetic"), "is a classifier"),
        (("--segmenter", seg, "--screen", seg, "--source", "synthetic"), "--screen"),
        (("--segmenter", seg, "--input-size", "100x100", "--source", "synthetic:30:64x64"), "cannot take a 100×100 input"),
        (("--segmenter", seg, "--source", "synthetic", "--view", f"browser:127.0.0.1:{taken.getsockname()[1]}"),
         "already in use"),
        (("--segmenter", seg, "--source", tmp_path / "nothing.mp4"), "not found"),
        (("--segmenter", seg, "--source", "synthetic", "--view", "window"), "--view window needs"),
        (("--segmenter", seg, "--source", "http://nurse:s3cret@127.0.0.1:1/us.mjpg"),
         "cannot read the stream http://127.0.0.1:1/us.mjpg"),
    ]
    try:
        for args, needle in cases:
            res = run_cli("ultrasound", *args, "--view", "none", "--frames", "3") if "--view" not in args else \
                run_cli("ultrasound", *args, "--frames", "3")
            line = assert_one_line_error(res, needle)
            assert str(tmp_path) not in line or "nothing.mp4" in line
            assert "s3cret" not in res.stderr + res.stdout  # a stream's password never shows
    finally:
        taken.close()
    res = run_cli("ultrasound", "--segmenter", seg, "--source", "synthetic", "--view", "web")
    assert_one_line_error(res, "--view", code=2)
    res = run_cli("ultrasound", "--segmenter", seg, "--source", "synthetic", "--view", "none", "--stall-timeout", "0")
    assert_one_line_error(res, "--stall-timeout must be > 0", code=2)
