"""Segmentation folders: images/ paired with masks/, mask targets resized, stratified by foreground."""

from __future__ import annotations

import numpy as np
from calib_fixtures import image_meta, image_shape, write_dicom, write_png

from medge.calibration import load_data


def test_images_and_masks_folders_give_mask_targets(tmp_path):
    meta = image_meta(task="segmentation", labels=("lesion",), size=8, mean=(0.0,), std=(1.0,))
    rng = np.random.default_rng(0)
    for i in range(6):
        write_png(tmp_path / "images" / f"f{i}.png", rng.integers(0, 256, (16, 16), dtype=np.uint8))
        mask = np.zeros((16, 16), dtype=np.uint8)
        if i < 2:
            mask[4:12, 2:6] = 255  # lesion in 2 of 6 frames
        write_png(tmp_path / "masks" / f"f{i}.png", mask)
    write_dicom(tmp_path / "images" / "sub" / "d0.dcm", rng.integers(0, 4096, (16, 16), dtype=np.uint16))
    sub_mask = np.zeros((16, 16), dtype=np.uint8)
    sub_mask[0:2, 0:2] = 1
    write_png(tmp_path / "masks" / "sub" / "d0.png", sub_mask)
    write_png(tmp_path / "images" / "orphan.png", np.zeros((16, 16), dtype=np.uint8))

    ds = load_data(str(tmp_path), meta, input_name="image", input_shape=image_shape(meta), n=4, seed=1)
    rep = ds.report
    assert rep.labels_from == "masks" and (rep.found, rep.used) == (8, 4)
    assert rep.skipped_items == [{"item": "images/orphan.png", "reason": "no mask with the same name in masks/"}]
    assert rep.class_counts == {"empty": 2, "foreground": 2}  # 3 of 7 have lesions → 2 of 4
    targets = ds.targets()
    assert targets.shape == (4, 8, 8) and targets.dtype == np.uint8 and set(np.unique(targets)) <= {0, 1}

    full = load_data(str(tmp_path), meta, input_name="image", input_shape=image_shape(meta))
    by_source = {s.source: s.target for s in full.samples}
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[2:6, 1:3] = 1  # the 16×16 box resized (nearest) to 8×8
    np.testing.assert_array_equal(by_source["images/f0.png"], expected)
    assert by_source["images/sub/d0.dcm"].sum() == 1 and by_source["images/f5.png"].sum() == 0
