"""Tiny artifacts for the compare tests (shared, cached build from tests/runtimes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "runtimes"))

from tiny_artifacts import TinyArtifacts, cached_build  # noqa: E402


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyArtifacts:
    """ONNX, OpenVINO IR, tflite (NCHW and NHWC) made from one tiny torch model."""
    return cached_build(tmp_path_factory.getbasetemp().parent)
