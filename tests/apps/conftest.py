"""Fixtures for the app tests: small real bundles of the zoo ultrasound models, built once per session.

The models are exported in-process at 64×64 (the zoo U-Net takes any multiple of 16) and compiled
with the real `medge compile` CLI: the U-Net for `local` (ONNX Runtime), the frame screen for
`intel-cpu` (OpenVINO), so the apps run on two real runtimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.cli_checks import run_medge
from fixtures.shared_build import build_once

APP_SIZE = 64


@dataclass(frozen=True)
class AppBundles:
    """Paths of the session's app bundles and the ONNX files they were compiled from."""

    segmenter: Path
    screen: Path
    segmenter_onnx: Path
    screen_onnx: Path


def _compile(onnx: Path, target: str, out: Path) -> None:
    proc = run_medge(["compile", onnx, "--target", target, "-o", out])
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="session")
def app_bundles(tmp_path_factory) -> AppBundles:
    """The U-Net segmenter (local/onnxruntime) and frame-screen (intel-cpu/OpenVINO) bundles at 64×64,
    built once per run (shared by the xdist workers)."""

    def build(root: Path) -> None:
        from medge.export import export_onnx

        shape = (1, 1, APP_SIZE, APP_SIZE)
        export_onnx("us-lesion-unet", root / "us-lesion-unet.onnx", input_shape=shape)
        export_onnx("us-frame-screen", root / "us-frame-screen.onnx", input_shape=shape)
        _compile(root / "us-lesion-unet.onnx", "local", root / "unet")
        _compile(root / "us-frame-screen.onnx", "intel-cpu", root / "screen")

    root = build_once(tmp_path_factory, "app_bundles", build)
    return AppBundles(root / "unet", root / "screen", root / "us-lesion-unet.onnx", root / "us-frame-screen.onnx")
