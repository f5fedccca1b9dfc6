"""Fixtures for the deploy/doctor tests: the profile tests' real sshd on 127.0.0.1, and a small segmenter bundle."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from fixtures.cli_checks import run_medge

_spec = importlib.util.spec_from_file_location("profile_conftest", Path(__file__).parents[1] / "profile" / "conftest.py")
_profile = importlib.util.module_from_spec(_spec)
sys.modules["profile_conftest"] = _profile  # dataclasses look their module up there
_spec.loader.exec_module(_profile)
sshd = _profile.sshd  # the same real OpenSSH server fixture as the remote-profiling tests


@pytest.fixture(scope="session")
def seg_bundle(tmp_path_factory) -> Path:
    """The zoo U-Net at 64×64 compiled for `local` (ONNX Runtime) with the real CLI."""
    from medge.export import export_onnx

    root = tmp_path_factory.mktemp("deploy_bundle")
    export_onnx("us-lesion-unet", root / "unet.onnx", input_shape=(1, 1, 64, 64))
    proc = run_medge(["compile", root / "unet.onnx", "--target", "local", "-o", root / "unet"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "unet"
