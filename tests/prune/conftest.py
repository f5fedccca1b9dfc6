"""Pruning test helpers: the residual fixture models are importable by the CLI subprocess."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def residual_models_on_path(monkeypatch):
    """Put tests/prune on PYTHONPATH so that ``residual_models:<factory>`` imports in the CLI."""
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(HERE) + (os.pathsep + old if old else ""))


def write_png_folder(folder: Path, n: int, size: int = 32, seed: int = 0) -> Path:
    """`n` unlabelled grey PNGs (blobs and gradients on noise), as a user's own image folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        img = rng.uniform(0.0, 0.3) + rng.uniform(-0.3, 0.3) * (xx if i % 2 else yy)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.25)
            img = img + rng.uniform(0.2, 0.7) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
        Image.fromarray((img * 255).astype(np.uint8), mode="L").save(folder / f"img_{i:03d}.png")
    return folder


@pytest.fixture
def png_folder(tmp_path):
    """A folder of 80 unlabelled 32x32 PNGs."""
    return write_png_folder(tmp_path / "images", 80)


def write_calibrated_weights(images: Path, path: Path, width: int = 16) -> Path:
    """Safetensors of `residual_models.tiny_resnet` whose BatchNorm statistics match `images`.

    Stands in for a user's trained checkpoint: a teacher whose normalisation fits its data.
    """
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from residual_models import tiny_resnet  # noqa: PLC0415 - tests/prune is on sys.path in pytest

    model = tiny_resnet(width=width)
    x = torch.from_numpy(np.stack([np.asarray(Image.open(p), dtype=np.float32)[None] / 255.0
                                   for p in sorted(images.glob("*.png"))]))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture
def user_model(png_folder, tmp_path):
    """(images folder, weights file) of a user's tiny residual CNN with data-matched BatchNorm."""
    return png_folder, write_calibrated_weights(png_folder, tmp_path / "user.safetensors")
