"""Image folders: labels from subfolders/CSV, stratified deterministic sampling, conversions, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from calib_fixtures import image_meta, image_shape, write_png

from medge.calibration import load_data
from medge.common.errors import DataError


def _load(path, meta, **kw):
    return load_data(str(path), meta, input_name="image", input_shape=image_shape(meta), **kw)


@pytest.fixture
def class_folder(tmp_path):
    """40 effusion, 10 nodule, 50 normal 8×8 PNGs, each image distinct."""
    rng = np.random.default_rng(0)
    root = tmp_path / "cxr"
    for cls, count in (("effusion", 40), ("nodule", 10), ("normal", 50)):
        for i in range(count):
            write_png(root / cls / f"{cls}_{i:03d}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    return root


def test_subfolder_labels_stratified_counts_and_determinism(class_folder):
    meta = image_meta(size=8)
    ds = _load(class_folder, meta, n=20, seed=3)
    rep = ds.report
    assert (rep.found, rep.used, rep.skipped, rep.requested) == (100, 20, 0, 20)
    assert rep.labels_from == "subfolders" and rep.stratified
    assert rep.class_counts == {"(none)": 10, "effusion": 8, "nodule": 2}  # proportional to 50/40/10
    targets = ds.targets()
    assert targets.shape == (20, 2) and targets.dtype == np.float32
    for sample in ds.samples:  # each target agrees with the image's folder
        folder = sample.source.split("/")[0]
        expected = {"effusion": [1, 0], "nodule": [0, 1], "normal": [0, 0]}[folder]
        assert sample.target.tolist() == expected
    again = _load(class_folder, meta, n=20, seed=3)
    assert again.sha256 == ds.sha256 == rep.sha256
    assert [s.source for s in again.samples] == [s.source for s in ds.samples]
    assert _load(class_folder, meta, n=20, seed=4).sha256 != ds.sha256


def test_every_class_is_represented_even_when_rare(class_folder):
    ds = _load(class_folder, image_meta(size=8), n=3, seed=0)
    assert ds.report.class_counts == {"(none)": 1, "effusion": 1, "nodule": 1}


def test_more_requested_than_found_uses_everything(class_folder):
    ds = _load(class_folder, image_meta(size=8), n=500)
    assert ds.report.used == 100 and len(ds) == 100
    assert ds.report.notes == ["only 100 usable samples for the 500 requested"]
    assert ds.report.class_counts == {"(none)": 50, "effusion": 40, "nodule": 10}


def test_csv_label_names_and_broken_rows(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(6):
        write_png(tmp_path / "img" / f"{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "img" / "labels.csv").write_text(
        "0.png,effusion\n1.png,effusion,nodule\n2.png,none\n3.png\n4.png,Nodule\n5.png,effusion\n"
        "missing.png,nodule\nbroken.png,nodule\n")
    ds = _load(tmp_path / "img", image_meta(size=8))
    rep = ds.report
    assert rep.labels_from == "csv"
    assert (rep.found, rep.used, rep.skipped) == (8, 6, 2)
    reasons = {s["item"]: s["reason"] for s in rep.skipped_items}
    assert "not found" in reasons["missing.png"] and "cannot decode image" in reasons["broken.png"]
    assert str(tmp_path) not in json.dumps(rep.to_dict()["skipped_items"])  # only paths relative to the source
    assert rep.class_counts == {"(none)": 2, "effusion": 3, "nodule": 2}
    by_source = {s.source: s.target.tolist() for s in ds.samples}
    assert by_source["1.png"] == [1, 1] and by_source["3.png"] == [0, 0] and by_source["4.png"] == [0, 1]


def test_csv_with_label_columns_given_as_the_source(tmp_path):
    for i in range(4):
        write_png(tmp_path / f"{i}.png", np.full((8, 8), 40 * i, dtype=np.uint8))
    csv_path = tmp_path / "split.csv"
    csv_path.write_text("file,nodule,effusion\n0.png,1,0\n1.png,0,1\n2.png,1,1\n3.png,0,0\n")
    ds = _load(csv_path, image_meta(size=8))
    by_source = {s.source: s.target.tolist() for s in ds.samples}
    assert by_source == {"0.png": [0, 1], "1.png": [1, 0], "2.png": [1, 1], "3.png": [0, 0]}


def test_binary_classifier_labels(tmp_path):
    meta = image_meta(task="classification", labels=("structure_present",), size=8)
    for i in range(3):
        write_png(tmp_path / "structure_present" / f"p{i}.png", np.full((8, 8), 200 + i, dtype=np.uint8))
        write_png(tmp_path / "negative" / f"n{i}.png", np.full((8, 8), 10 + i, dtype=np.uint8))
    ds = _load(tmp_path, meta)
    assert ds.report.class_counts == {"negative": 3, "positive": 3}
    assert sorted(ds.targets().tolist()) == [0, 0, 0, 1, 1, 1]


def test_unknown_csv_label_is_a_one_line_data_error(tmp_path):
    write_png(tmp_path / "0.png", np.zeros((8, 8), dtype=np.uint8))
    (tmp_path / "labels.csv").write_text("0.png,pneumonia\n")
    with pytest.raises(DataError, match="unknown label 'pneumonia'.*effusion, nodule") as err:
        _load(tmp_path, image_meta(size=8))
    assert "\n" not in str(err.value)


def test_patient_folders_are_not_mistaken_for_labels(tmp_path):
    for pid in ("pat001", "pat002"):
        write_png(tmp_path / pid / "a.png", np.full((8, 8), 9, dtype=np.uint8) + len(pid))
    ds = _load(tmp_path, image_meta(size=8))
    assert ds.report.labels_from is None and ds.targets() is None and ds.report.class_counts is None


def test_intensity_mean_std_and_channel_conversions(tmp_path):
    grey = np.array([[0, 51], [102, 255]], dtype=np.uint8)
    write_png(tmp_path / "g.png", grey)
    meta = image_meta(size=2, mean=(0.2,), std=(0.5,))
    got = _load(tmp_path / "g.png", meta).samples[0].feeds["image"]
    np.testing.assert_allclose(got[0, 0], (grey / 255.0 - 0.2) / 0.5, atol=1e-6)

    wide = (np.arange(4, dtype=np.uint16).reshape(2, 2) * 20000).astype(np.uint16)
    write_png(tmp_path / "w16.png", wide)
    got = _load(tmp_path / "w16.png", image_meta(size=2, mean=(0.0,), std=(1.0,))).samples[0].feeds["image"]
    np.testing.assert_allclose(got[0, 0], wide / 65535.0, atol=1e-6)

    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    write_png(tmp_path / "red.png", rgb)
    got = _load(tmp_path / "red.png", image_meta(size=2, mean=(0.0,), std=(1.0,))).samples[0].feeds["image"]
    np.testing.assert_allclose(got, 0.299, atol=1e-6)  # BT.601 luma of pure red

    meta3 = image_meta(size=2, channels=3, layout="NHWC", mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 4.0))
    got = _load(tmp_path / "g.png", meta3).samples[0].feeds["image"]
    assert got.shape == (1, 2, 2, 3)
    for c, (m, s) in enumerate(((0.1, 1.0), (0.2, 2.0), (0.3, 4.0))):
        np.testing.assert_allclose(got[0, ..., c], (grey / 255.0 - m) / s, atol=1e-6)


def test_resize_keeps_a_constant_image_constant(tmp_path):
    write_png(tmp_path / "c.png", np.full((40, 30), 128, dtype=np.uint8))
    got = _load(tmp_path / "c.png", image_meta(size=16, mean=(0.0,), std=(1.0,))).samples[0].feeds["image"]
    assert got.shape == (1, 1, 16, 16)
    np.testing.assert_allclose(got, 128 / 255.0, atol=1e-5)


def test_missing_and_empty_sources(tmp_path):
    meta = image_meta(size=8)
    with pytest.raises(DataError, match="does not exist"):
        _load(tmp_path / "nope", meta)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no usable samples found"):
        _load(tmp_path / "empty", meta)
    with pytest.raises(DataError, match=">= 1"):
        _load(tmp_path / "empty", meta, n=0)
