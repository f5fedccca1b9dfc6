"""The bundle format, read and written in one place: a folder with the target's artifact(s),
build/run scripts and ``manifest.json``.

The manifest records the sha256 of every file, the source model, calibration/evaluation data,
toolchain versions, gate results, op-coverage preflight and the command that made the bundle.
`verify_bundle` rechecks all of it.  Files that the device itself produces later (a TensorRT engine,
a timing cache) go to the folder named by the manifest's ``device_output_dir`` and are not hashed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from medge.common.errors import BundleError
from medge.common.fileio import sha256_file, write_json_atomic
from medge import __version__
from medge.common.reports import Report, details_row, verdict

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

FORMAT_VERSION = 1

# Distribution names whose versions go into every manifest (those not installed are recorded as None).
_TOOLCHAIN_PACKAGES = {
    "medge": "medge",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "nncf": "nncf",
    "litert": "ai-edge-litert",
    "litert_torch": "litert-torch",
    "torch": "torch",
    "polygraphy": "polygraphy",
    "tensorrt": "tensorrt",
}


def toolchain_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape an artifact (None when not installed)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for key, dist in _TOOLCHAIN_PACKAGES.items():
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = None
    if versions["medge"] is None:
        versions["medge"] = __version__
    return versions


def _bundle_files(bundle: Path, device_output_dir: str | None) -> list[str]:
    """Relative POSIX paths of every file in `bundle` except the manifest and device outputs."""
    files = []
    for path in sorted(bundle.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(bundle).as_posix()
        if rel == MANIFEST:
            continue
        if device_output_dir and rel.split("/", 1)[0] == device_output_dir:
            continue
        files.append(rel)
    return files


def hash_files(bundle: str | os.PathLike, device_output_dir: str | None = DEVICE_OUTPUT_DIR) -> dict[str, str]:
    """{relpath: sha256} of every file in `bundle` (manifest and device outputs excluded)."""
    bundle = Path(bundle)
    return {rel: sha256_file(bundle / rel) for rel in _bundle_files(bundle, device_output_dir)}


def write_manifest(bundle: str | os.PathLike, fields: dict[str, Any]) -> dict[str, Any]:
    """Hash every file in `bundle`, add format/version/time/toolchain, write ``manifest.json``.

    `fields` holds the bundle-specific entries (target, precision, primary_artifact, runtime,
    source_model, calibration, gate, preflight, command, notes...); an optional
    ``toolchain_expected`` dict (e.g. ``{"tensorrt_expected": "10.3"}``) is merged into the
    recorded toolchain versions.  Returns the manifest written.
    """
    bundle = Path(bundle)
    fields = dict(fields)
    toolchain = {**toolchain_versions(), **fields.pop("toolchain_expected", {})}
    manifest: dict[str, Any] = {
        "format": "medge-bundle",
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "toolchain": toolchain,
        "device_output_dir": DEVICE_OUTPUT_DIR,
        **fields,
    }
    primary = manifest.get("primary_artifact")
    manifest["files"] = hash_files(bundle, manifest["device_output_dir"])
    if primary is not None and primary not in manifest["files"]:
        raise BundleError(f"bundle {bundle.name}: primary artifact '{primary}' was not written")
    write_json_atomic(bundle / MANIFEST, manifest)
    (bundle / MANIFEST).chmod(0o644)
    return manifest


@dataclass
class VerifyReport(Report):
    """Result of `medge verify BUNDLE`: every hash rechecked."""

    title: ClassVar[str] = "verify"
    bundle: str = ""
    target: str | None = None
    precision: str | None = None
    primary_artifact: str | None = None
    format_version: int | None = None
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    verified: bool = False
    manifest_sha256: str | None = None  # of manifest.json itself: what `medge compile` printed
    expected_sha256: str | None = None  # --expect-sha256

    @property
    def ok(self) -> bool:
        return self.verified

    def problems(self) -> list[str]:
        """Every problem found, one line each."""
        return ([f"missing {r}" for r in self.missing] + [f"modified {r}" for r in self.modified]
                + [f"extra {r}" for r in self.extra] + self.errors)

    def table_rows(self) -> list[tuple[str, str]]:
        problems = self.problems()
        rows = [
            ("result", verdict(self.verified, f"{self.checked} files match the manifest" if self.verified
                               else f"{len(problems)} problem(s)")),
            ("bundle", f"{self.bundle} ({self.target}, {self.precision}, primary {self.primary_artifact})"),
            ("manifest sha256", self.manifest_sha256 or "-"),
        ]
        if self.expected_sha256:
            rows.append(("expected sha256", f"{self.expected_sha256} "
                         f"({'matches' if self.expected_sha256 == self.manifest_sha256 else 'DIFFERS'})"))
        rows += [("problem", p) for p in problems[:8]]
        if len(problems) > 8:
            rows.append(("problem", f"… {len(problems) - 8} more in the JSON report"))
        return rows + [details_row()]


def _safe_relpath(rel: str) -> bool:
    parts = Path(rel).parts
    return bool(parts) and not Path(rel).is_absolute() and ".." not in parts and "\\" not in rel


def verify_bundle(bundle: str | os.PathLike, expect_sha256: str | None = None,
                  artifact_problems: Callable[[Path], list[str]] | None = None) -> VerifyReport:
    """Recheck every file hash of a bundle: missing, extra and modified files and a bad manifest, and
    that the primary artifact opens (a manifest may record the hash of a corrupt file).

    The sha256 of ``manifest.json`` itself is reported, and checked against `expect_sha256` (what
    `medge compile` printed) when given.  `artifact_problems` (the runtimes' loader check,
    `medge.runtimes.model_file.artifact_problems`) says whether the primary artifact opens; the
    format itself knows no runtime.  Raises `BundleError` only when `bundle` is not a folder;
    every other problem is in the report (``ok`` False).
    """
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"bundle folder not found: {bundle}")
    report = VerifyReport(bundle=str(bundle), expected_sha256=expect_sha256.lower() if expect_sha256 else None)
    if (bundle / MANIFEST).is_file():
        report.manifest_sha256 = sha256_file(bundle / MANIFEST)
        if report.expected_sha256 and report.expected_sha256 != report.manifest_sha256:
            report.errors.append(f"manifest.json sha256 {report.manifest_sha256} differs from --expect-sha256 "
                                 f"{report.expected_sha256}: this is not the bundle that was compiled")
    try:
        manifest = load_manifest(bundle)
    except BundleError as exc:
        report.errors.append(str(exc))
        return report
    report.target = (manifest.get("target") or {}).get("name")
    report.precision = manifest.get("precision")
    report.primary_artifact = manifest.get("primary_artifact")
    report.format_version = manifest.get("format_version")
    if report.format_version != FORMAT_VERSION:
        report.errors.append(f"unsupported bundle format_version {report.format_version!r} (expected {FORMAT_VERSION})")
    expected: dict[str, str] = manifest["files"]
    device_dir = manifest.get("device_output_dir")
    for rel, digest in sorted(expected.items()):
        if not _safe_relpath(rel):
            report.errors.append(f"unsafe path in manifest: {rel!r}")
            continue
        path = bundle / rel
        if not path.is_file():
            report.missing.append(rel)
            continue
        report.checked += 1
        if sha256_file(path) != digest:
            report.modified.append(rel)
    report.extra = [rel for rel in _bundle_files(bundle, device_dir) if rel not in expected]
    if report.primary_artifact not in expected:
        report.errors.append(f"primary artifact {report.primary_artifact!r} is not listed in the manifest")
    elif artifact_problems is not None and report.primary_artifact not in report.missing + report.modified:
        report.errors.extend(f"primary artifact: {p}" for p in artifact_problems(bundle / report.primary_artifact))
    report.verified = not (report.missing or report.extra or report.modified or report.errors)
    return report
