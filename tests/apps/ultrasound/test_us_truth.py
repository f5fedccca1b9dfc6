"""Issue #22 items 4–5 for the ultrasound app: calibration that is right or refused (region, Pixel
Spacing, Imager Pixel Spacing), a minimum lesion area, and a page that names the model, says when
its weights are demo and keeps a short cine's last frame and summary after the run."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from fixtures.cli_checks import assert_one_line_error
from medge.apps.ultrasound.sources import DicomSource
from us_fixtures import CHROMEDRIVER, CHROMIUM, RunningApp, headless_chromium, us_frames, write_cine


def _pydicom_cine() -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("examples_ybr_color.dcm")  # 320×240 US cine whose region says x 84–595, y 31–414
    if path is None:
        pytest.skip("pydicom's test file examples_ybr_color.dcm is not installed")
    return Path(path)


def _edited_cine(tmp_path: Path, name: str, edit) -> Path:
    """A 160×120 cine with a fitting cm region (x 10–149, y 5–114, 0.2 mm/px), then `edit(ds)` applied."""
    import pydicom

    path = write_cine(tmp_path / name, us_frames(4), region=(10, 5, 149, 114), delta_cm=0.02)
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path)
    return path


def test_pydicom_cine_region_outside_the_image_is_refused_with_px_areas(run_cli, app_bundles):
    res = run_cli("ultrasound", "--segmenter", app_bundles.segmenter, "--source", _pydicom_cine(), "--view", "none",
                  "--as-fast-as-possible", "--frames", "8", "--quiet", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    src = r["source"]
    assert (src["width"], src["height"]) == (320, 240) and not src["cropped_to_region"]  # not clipped to 236×209
    assert src["mm_per_px"] is None and src["mm_per_px_xy"] is None  # not the region's 0.510 mm/px
    assert "max_area_px" in r["lesion"] and "max_area_mm2" not in r["lesion"]
    assert r["lesion"]["min_lesion_area"] == "25 px"
    (warning,) = [w for w in r["warnings"] if "region" in w]
    assert "x 84–595, y 31–414" in warning and "does not fit the 320×240 image" in warning and "px" in warning
    assert "areas in px" in res.stdout and warning in res.stderr  # the table and the console say it too
    assert r["models"]["segmenter"]["model"] == "us-lesion-unet" and r["models"]["segmenter"]["demo"] is True
    assert len(r["models"]["segmenter"]["sha256"]) == 64


def test_region_in_other_units_or_without_deltas_is_refused(tmp_path):
    def units(ds):
        ds.SequenceOfUltrasoundRegions[0].PhysicalUnitsXDirection = 4  # seconds (an M-mode axis)

    def no_delta(ds):
        ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaY = 0.0

    for edit, needle in ((units, "physical units are seconds/cm, not cm"), (no_delta, "Physical Delta X/Y")):
        info = DicomSource(_edited_cine(tmp_path, f"{edit.__name__}.dcm", edit)).info
        assert (info.width, info.height, info.mm_per_px) == (160, 120, None)
        assert not info.details["cropped_to_region"]
        assert any(needle in w and "areas are in px" in w for w in info.warnings), info.warnings
    good = DicomSource(_edited_cine(tmp_path, "good.dcm", lambda ds: None)).info  # the same file, right: cropped
    assert (good.width, good.height) == (140, 110) and good.mm_per_px == pytest.approx(0.2) and not good.warnings


def test_pixel_spacing_and_imager_pixel_spacing_right_wrong_or_missing():
    from pydicom.dataset import Dataset

    from medge.calibration.dicom import pixel_spacing_mm

    def ds(**attrs) -> Dataset:
        d = Dataset()
        for k, v in attrs.items():
            setattr(d, k, v)
        return d

    assert pixel_spacing_mm(ds(PixelSpacing=[0.3, 0.2])) == ([0.2, 0.3], None)  # row\\column → (dx, dy)
    assert pixel_spacing_mm(ds()) == (None, None)  # missing: px, nothing to warn about
    for bad in ([0, 0.2], [-0.1, 0.1], [0.2], ["-0", 0.2]):
        spacing, warning = pixel_spacing_mm(ds(PixelSpacing=bad))
        assert spacing is None and "Pixel Spacing" in warning and "not two positive numbers" in warning, bad
    # a radiograph (DX): Imager Pixel Spacing is at the detector; the magnification factor brings it to the patient
    dx = ds(Modality="DX", ImagerPixelSpacing=[0.15, 0.15], EstimatedRadiographicMagnificationFactor=1.25)
    assert pixel_spacing_mm(dx)[0] == pytest.approx([0.12, 0.12])
    spacing, warning = pixel_spacing_mm(ds(Modality="DX", ImagerPixelSpacing=[0.15, 0.15]))
    assert spacing is None and "Estimated Radiographic Magnification Factor" in warning
    spacing, warning = pixel_spacing_mm(ds(Modality="DX", ImagerPixelSpacing=[0.15, 0]))
    assert spacing is None and "Imager Pixel Spacing" in warning
    # Pixel Spacing (calibrated at the patient) wins over Imager Pixel Spacing
    both = ds(PixelSpacing=[0.1, 0.1], ImagerPixelSpacing=[0.15, 0.15])
    assert pixel_spacing_mm(both) == ([0.1, 0.1], None)


def test_wrong_pixel_spacing_through_the_cli_gives_px_and_a_warning(run_cli, app_bundles, tmp_path):
    def spacing(ds):
        del ds.SequenceOfUltrasoundRegions
        ds.PixelSpacing = [0.0, 0.2]

    cine = _edited_cine(tmp_path, "spacing.dcm", spacing)
    res = run_cli("ultrasound", "--segmenter", app_bundles.segmenter, "--source", cine, "--view", "none",
                  "--as-fast-as-possible", "--quiet", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.report["source"]["mm_per_px"] is None and "max_area_px" in res.report["lesion"]
    assert any("Pixel Spacing" in w and "not two positive numbers" in w for w in res.report["warnings"])
    res = run_cli("ultrasound", "--segmenter", app_bundles.segmenter, "--source", cine, "--view", "none",
                  "--quiet", "--min-lesion-area", "5mm2")
    assert_one_line_error(res, "--min-lesion-area 5mm2", "no calibration", "px", code=2)
    res = run_cli("ultrasound", "--segmenter", app_bundles.segmenter, "--source", cine, "--view", "none",
                  "--quiet", "--min-lesion-area", "big")
    assert_one_line_error(res, "--min-lesion-area 'big'", "25px or 7mm2", code=2)


def test_one_pixel_mask_is_not_a_lesion():
    from medge.apps.ultrasound.overlay import draw_overlay, mask_at_frame, min_area_px

    prob = np.zeros((64, 64), np.float32)
    prob[10, 10] = 1.0  # one pixel above the threshold
    prob[30:40, 30:40] = 1.0  # and a real 10×10 region
    seg = mask_at_frame(prob, 64, 64, None, 0.5, min_area_px((25, "px"), None))
    assert seg.area_px == 100 and seg.mask[10, 10] == 0
    only_speck = np.zeros((64, 64), np.float32)
    only_speck[5, 5] = 1.0
    seg = mask_at_frame(only_speck, 64, 64, [0.5, 0.5], 0.5, min_area_px((7, "mm2"), [0.5, 0.5]))  # 28 px
    assert seg.area_px == 0 and seg.area_mm2 == 0.0
    image = draw_overlay(np.full((64, 64), 128, np.uint8), seg, frame_number=1, latency_ms=1.0)
    assert image.shape == (64, 64, 3)


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
def test_page_names_the_model_warns_and_keeps_the_last_frame(app_bundles, tmp_path):
    from selenium.webdriver.common.by import By

    driver = headless_chromium(tmp_path / "chromium-profile")  # first: the 1 s cine must not end before the page opens
    app = RunningApp(["--segmenter", str(app_bundles.segmenter), "--source", str(_pydicom_cine()), "--quiet",
                      "--view", "browser:127.0.0.1:0", "--linger", "5"], tmp_path / "r.json")
    try:
        driver.get(app.url)
        header = driver.find_element(By.ID, "header").text
        assert "us-lesion-unet" in header and "version sha256" in header
        assert "demo weights trained on synthetic data: not for clinical use" in header
        assert "does not fit the 320×240 image" in header
        summary = driver.find_element(By.ID, "summary")
        deadline = time.time() + 60
        while time.time() < deadline and "run ended" not in summary.text:  # the app lingers, then exits
            time.sleep(0.2)
        report = app.stop(None)
        assert "run ended" in summary.text and "frames in 30" in summary.text, summary.text
        image = driver.find_element(By.ID, "frame")
        assert driver.execute_script("return arguments[0].naturalWidth", image) == 320  # the last frame stays
        driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()
        if app.proc.poll() is None:
            app.proc.kill()
    assert report["frames"]["in"] == 30 and not report["stopped_early"]


@pytest.mark.slow
def test_segmentation_build_reports_dice_and_the_gate_in_its_own_terms(run_cli, tmp_path):
    out = tmp_path / "us"
    res = run_cli("build", "us-lesion-unet", "--target", "intel-cpu", "-o", out, "--runs", "5", "--warmup", "1",
                  report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    (dice,) = [line for line in res.stdout.splitlines() if line.startswith("dice ")]
    assert "fp32 onnx 0.8" in dice and "samples of synthetic:us-seg" in dice, dice  # the task metric, measured
    (gate,) = [line for line in res.stdout.splitlines() if line.startswith("gate ")]
    assert "parity with fp32 onnx" in gate and "min cosine 0.99" in gate and "PASS" in gate, gate  # not "min cosine 1"
    md = Path(res.report["report_files"]["markdown"]).read_text()
    assert "## Gate and task metric" in md and "| dice | fp32 onnx 0.8" in md
    assert "| gate min cosine vs fp32 | 1 |" not in md
