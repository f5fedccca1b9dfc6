"""Resolving artifact files and bundle folders: runtime, device, metadata, size."""

from __future__ import annotations

import json
import shutil

import pytest

from medge.common.errors import BundleError, MedgeError, UnknownNameError
from medge.common.metadata import ModelMeta
from medge.runtimes.artifacts import artifact_size, resolve_artifact
from medge.compare import split_runtime_suffix

META = ModelMeta(model="tiny", task="segmentation", labels=["a", "b"], input_layout="NCHW", preprocessing={})


@pytest.fixture
def onnx_with_meta(tiny, tmp_path):
    import onnx

    from medge.common.metadata import embed_metadata

    model = onnx.load(str(tiny.onnx))
    embed_metadata(model, META)
    path = tmp_path / "seg.onnx"
    onnx.save(model, str(path))
    return path


def test_onnx_file(onnx_with_meta):
    ref = resolve_artifact(onnx_with_meta)
    assert ref.runtime == "onnxruntime" and ref.meta == META and ref.onnx == onnx_with_meta and ref.bundle is None
    assert artifact_size(ref) == onnx_with_meta.stat().st_size


def test_openvino_ir_keeps_the_onnx_metadata(onnx_with_meta, tmp_path):
    import openvino as ov

    xml = tmp_path / "seg.xml"
    ov.save_model(ov.convert_model(str(onnx_with_meta)), str(xml), compress_to_fp16=False)
    ref = resolve_artifact(xml)
    assert ref.runtime == "openvino" and ref.meta == META and ref.onnx is None
    assert artifact_size(ref) == xml.stat().st_size + xml.with_suffix(".bin").stat().st_size


def test_bundle_uses_manifest_and_finds_onnx_metadata(tiny, onnx_with_meta, tmp_path):
    from medge.common.bundle import write_manifest

    bundle = tmp_path / "bundle"
    (bundle / "fp32").mkdir(parents=True)
    shutil.copy(tiny.tflite, bundle / "model.tflite")
    shutil.copy(onnx_with_meta, bundle / "fp32" / "model.onnx")
    write_manifest(bundle, {"primary_artifact": "model.tflite", "runtime": "litert", "runtime_device": "cpu"})
    ref = resolve_artifact(bundle)
    assert (ref.path, ref.runtime, ref.device, ref.bundle) == (bundle / "model.tflite", "litert", "cpu", bundle)
    assert ref.meta == META and ref.onnx == bundle / "fp32" / "model.onnx" and ref.label == str(bundle)


def test_bad_bundles(tiny, tmp_path):
    with pytest.raises(BundleError, match="without manifest.json"):
        resolve_artifact(tmp_path)
    bundle = tmp_path / "b"
    bundle.mkdir()
    shutil.copy(tiny.onnx, bundle / "model.onnx")
    manifest = {"format": "medge-bundle", "files": {}, "primary_artifact": "missing.onnx"}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="primary artifact missing.onnx is missing"):
        resolve_artifact(bundle)
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "primary_artifact": "model.onnx", "runtime": "onnxrt"}))
    with pytest.raises(UnknownNameError, match="did you mean 'onnxruntime'"):
        resolve_artifact(bundle)


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_text("hello")
    with pytest.raises(MedgeError, match="x.onnx is not a valid ONNX model: it is a text file"):
        resolve_artifact(bad)


def test_runtime_suffix():
    assert split_runtime_suffix("m.onnx@openvino") == ("m.onnx", "openvino")
    assert split_runtime_suffix("user@host/m.onnx") == ("user@host/m.onnx", None)
    assert split_runtime_suffix("m.onnx") == ("m.onnx", None)
