"""Open a bundle or artifact through `medge.runtimes` (the app-model contract the X-ray app needs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medge.errors import MedgeError
from medge.metadata import ModelMeta


@dataclass
class BundleModel:
    """A loaded artifact with its metadata and the sha256 that versions its results."""

    runtime: Any
    meta: ModelMeta | None
    sha256: str
    input_name: str
    input_dtype: str

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch (float32, the model's layout) and return the outputs by name."""
        from medge.runtimes.base import dequantize_output, quantize_input

        info = self.runtime.inputs()[0]
        out = self.runtime.infer({self.input_name: quantize_input(x, info)})
        by_name = {o.name: o for o in self.runtime.outputs()}
        return {k: dequantize_output(v, by_name[k]) if k in by_name else v for k, v in out.items()}

    def close(self) -> None:
        """Release the runtime."""
        self.runtime.close()


def open_model(path: str | Path, threads: int | None = None) -> BundleModel:
    """Resolve `path` (bundle folder or artifact), check its hash against the manifest, load it."""
    from medge.fileio import sha256_file
    from medge.manifest import load_manifest
    from medge.runtimes import open_runtime
    from medge.runtimes.artifacts import resolve_artifact

    ref = resolve_artifact(path)
    sha = sha256_file(ref.path)
    if ref.bundle is not None:
        expected = load_manifest(ref.bundle)["files"].get(ref.path.relative_to(ref.bundle).as_posix())
        if expected and expected != sha:
            raise MedgeError(f"bundle {ref.bundle.name}: {ref.path.name} does not match its manifest hash; "
                             f"run 'medge verify {ref.bundle}' and recompile")
    runtime = open_runtime(ref.path, ref.runtime, device=ref.device or "cpu", threads=threads)
    first = runtime.inputs()[0]
    return BundleModel(runtime, ref.meta, sha, first.name, first.dtype)
