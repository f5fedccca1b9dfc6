"""Reading a bundle's ``manifest.json``: the common ground of `devices` (which writes bundles) and
`runtimes`/apps (which open them), so that neither layer imports the other."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medge.errors import BundleError

MANIFEST = "manifest.json"
DEVICE_OUTPUT_DIR = "device"


def load_manifest(bundle: str | os.PathLike) -> dict[str, Any]:
    """Read and parse ``manifest.json`` of a bundle (or a path to the manifest itself)."""
    path = Path(bundle)
    if path.is_dir():
        path = path / MANIFEST
    if not path.exists():
        raise BundleError(f"no {MANIFEST} in {path.parent}; is this a medge bundle? (make one with 'medge compile')")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} does not parse as JSON ({exc}); recompile the bundle") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != "medge-bundle":
        raise BundleError(f"{path} is not a medge bundle manifest; recompile the bundle")
    if not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{path} has no 'files' table; recompile the bundle")
    return manifest

# Inputs and the FP32 model's outputs on them, stored in every bundle so the artifact can be checked
# on the device (`medge compare BUNDLE --reference`), as Polygraphy's --load-inputs/--load-outputs do.
REFERENCE_INPUTS = "reference/inputs.npz"
REFERENCE_OUTPUTS = "reference/outputs.npz"
