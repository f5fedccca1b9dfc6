"""Fixtures for the deploy/doctor tests: the profile tests' real sshd on 127.0.0.1, and a small segmenter bundle."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.cli_checks import medge_command

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
    proc = subprocess.run(medge_command() + ["compile", str(root / "unet.onnx"), "--target", "local", "-o", str(root / "unet")],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "unet"
