"""Segmentation folders: ``root/images/...`` paired with ``root/masks/...`` by relative path.

A mask pairs with the image that has the same path under ``images/`` without its suffix (so
``images/a/0001.dcm`` pairs with ``masks/a/0001.png``).  Masks are image files; any non-zero pixel
is foreground.  They are resized (nearest neighbour) to the model's H×W and become uint8 0/1
targets of shape (H, W), like the ``us-seg`` synthetic targets.  Sampling is stratified by
"foreground" vs "empty" masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medge.calibration.images import IMAGE_SUFFIXES, folder_candidates
from medge.calibration.labels import stratum_of
from medge.calibration.sampling import Candidate, SkipSample, error_detail
from medge.common.metadata import ModelMeta
from medge.common.registry import import_optional

IMAGES_DIR, MASKS_DIR = "images", "masks"


def read_mask(path: Path, pre: dict[str, Any]) -> np.ndarray:
    """A mask file as uint8 0/1 of the model's (H, W)."""
    image_mod = import_optional("PIL.Image", what="reading segmentation masks")
    try:
        with image_mod.open(path) as img:
            arr = np.array(img)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
        raise SkipSample(f"cannot decode mask ({error_detail(exc, path)})") from exc
    if arr.ndim == 3:
        arr = arr.any(axis=2)
    binary = (arr > 0).astype(np.uint8)
    height, width = int(pre["height"]), int(pre["width"])
    if binary.shape != (height, width):
        resized = image_mod.fromarray(binary * 255).resize((width, height), image_mod.Resampling.NEAREST)
        binary = (np.asarray(resized) > 127).astype(np.uint8)
    return binary


def paired_mask_candidates(root: Path, meta: ModelMeta | None, pre: dict[str, Any], *, max_frames: int | None
                           ) -> tuple[list[Candidate], list[tuple[str, str]], str] | None:
    """Image candidates with their masks as targets, or None when `root` is not an images/masks folder."""
    images_dir, masks_dir = root / IMAGES_DIR, root / MASKS_DIR
    if meta is None or meta.task != "segmentation" or not (images_dir.is_dir() and masks_dir.is_dir()):
        return None
    masks = {p.relative_to(masks_dir).with_suffix("").as_posix(): p for p in sorted(masks_dir.rglob("*"))
             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    images, skipped, _ = folder_candidates(images_dir, None, pre, max_frames=max_frames)
    skipped = [(f"{IMAGES_DIR}/{item}", reason) for item, reason in skipped]
    candidates = []
    for image in images:
        item = f"{IMAGES_DIR}/{image.item}"
        if "#frame" in image.item:
            skipped.append((item, "a multi-frame image cannot pair with one mask; export its frames as files"))
            continue
        mask_path = masks.get(Path(image.item).with_suffix("").as_posix())
        if mask_path is None:
            skipped.append((item, f"no mask with the same name in {MASKS_DIR}/"))
            continue
        try:
            foreground = bool(read_mask(mask_path, pre).any())
        except SkipSample as exc:
            skipped.append((item, str(exc)))
            continue
        candidates.append(Candidate(item, _with_mask(image, mask_path, pre), None,
                                    stratum_of(("foreground",) if foreground else ("empty",))))
    return candidates, skipped, MASKS_DIR


def _with_mask(image: Candidate, mask_path: Path, pre: dict[str, Any]):
    def load() -> tuple[np.ndarray, np.ndarray | None]:
        inputs, _ = image.load()
        return inputs, read_mask(mask_path, pre)

    return load
