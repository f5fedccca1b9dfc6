"""Bundles: `medge verify` rechecks every hash; any tampering exits 1 with the problem listed."""

from __future__ import annotations

import json

import pytest

from medge.common.bundle import load_manifest, verify_bundle
from medge.common.errors import BundleError


@pytest.fixture
def bundle(run_cli, tiny_onnx, tmp_path):
    out = tmp_path / "bundle"
    res = run_cli("compile", tiny_onnx, "--target", "jetson-orin-nano", "-o", out)
    assert res.returncode == 0, res.stderr
    return out


def _verify(run_cli, path):
    res = run_cli("verify", path, report=True)
    return res.returncode, res.report


def test_clean_bundle_verifies_and_device_outputs_are_ignored(run_cli, bundle):
    (bundle / "device").mkdir()
    (bundle / "device" / "model.engine").write_bytes(b"engine built on the device")
    code, rep = _verify(run_cli, bundle)
    assert code == 0 and rep["verified"] and rep["checked"] == 7
    manifest = load_manifest(bundle)
    assert set(manifest["files"]) == {"model.onnx", "engine_config.json", "build_engine.sh", "build_engine.py", "README.txt"} | {"reference/inputs.npz", "reference/outputs.npz"}
    assert all(len(h) == 64 for h in manifest["files"].values())


def test_modified_file(run_cli, bundle):
    with open(bundle / "model.onnx", "ab") as f:
        f.write(b"\0")
    code, rep = _verify(run_cli, bundle)
    assert code == 1 and rep["modified"] == ["model.onnx"] and not rep["verified"]


def test_missing_and_extra_files(run_cli, bundle):
    (bundle / "build_engine.sh").unlink()
    (bundle / "notes.txt").write_text("added later")
    code, rep = _verify(run_cli, bundle)
    assert code == 1 and rep["missing"] == ["build_engine.sh"] and rep["extra"] == ["notes.txt"]


def test_manifest_that_does_not_parse(run_cli, bundle):
    (bundle / "manifest.json").write_text("{ not json")
    code, rep = _verify(run_cli, bundle)
    assert code == 1 and "does not parse" in rep["errors"][0]


def test_manifest_with_unsafe_path_and_missing_manifest(bundle, tmp_path):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["../outside.txt"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    rep = verify_bundle(bundle)
    assert not rep.ok and any("unsafe path" in e for e in rep.errors)
    (bundle / "manifest.json").unlink()
    rep = verify_bundle(bundle)
    assert not rep.ok and "no manifest.json" in rep.errors[0]
    with pytest.raises(BundleError, match="not found"):
        verify_bundle(tmp_path / "nope")


def test_verify_nonexistent_bundle_cli(run_cli, tmp_path):
    res = run_cli("verify", tmp_path / "nope")
    assert res.returncode == 1 and "bundle folder not found" in res.stderr and "Traceback" not in res.stderr
