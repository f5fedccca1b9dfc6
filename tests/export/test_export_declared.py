"""A user's own model: declared (or documented-default) preprocessing, task and labels, end to end.

The issue's failing path: a MONAI DenseNet121 exported with `medge export` could not be calibrated
on a folder of PNGs or DICOMs.  Here it is exported without and with a declaration and goes
through quantize (PNG and DICOM folders), compile --target intel-cpu and build.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibration.calib_fixtures import write_dicom, write_png
from fixtures.cli_checks import assert_one_line_error
from medge.common.metadata import read_metadata

TINY = "fixtures.tiny_models:tiny_conv"
DENSENET = "monai.networks.nets:DenseNet121"
DENSENET_KWARGS = json.dumps({"spatial_dims": 2, "in_channels": 1, "out_channels": 14})
SHAPE = "1x1x32x32"
DECLARED = ["--modality", "CR", "--window", "2000,4000", "--mean", "0.5", "--std", "0.25",
            "--task", "multilabel-classification", "--labels", ",".join(f"finding{i}" for i in range(14))]


def _image_folders(root: Path, n: int = 6) -> tuple[Path, Path]:
    """A folder of 8-bit PNGs and one of 12-bit DICOMs, both of another size than the model input."""
    rng = np.random.default_rng(0)
    for i in range(n):
        write_png(root / "png" / f"img{i}.png", (rng.random((40, 48)) * 255).astype(np.uint8))
        write_dicom(root / "dcm" / f"img{i}.dcm", (rng.random((40, 48)) * 4000).astype(np.uint16))
    return root / "png", root / "dcm"


@pytest.mark.parametrize("flags, needle", [
    (["--intensity", "window"], "needs a window"),
    (["--window", "40"], "CENTER,WIDTH"),
    (["--window", "40,-1"], "WIDTH > 0"),
    (["--mean", "0.5,0.4"], "1 channel"),
    (["--std", "0"], "must be > 0"),
    (["--channels", "3"], "does not match the input shape"),
    (["--layout", "NCL"], "not an image layout"),
    (["--modality", "XR"], "unknown modality"),
    (["--task", "detection"], "unknown --task"),
    (["--like", "cxr-densenett"], "did you mean 'cxr-densenet-tiny'"),
    (["--preprocess", "{bad json"], "not valid JSON"),
    (["--preprocess", "missing.json"], "neither a JSON object nor an existing file"),
    (["--preprocess", '{"kind": "image", "gamma": 2}'], "unknown image preprocessing key"),
    (["--leads", "II,V1"], "rank-3 input"),
])
def test_bad_declarations_fail_in_one_line(run_cli, tmp_path, tiny_models, flags, needle):
    res = run_cli("export", TINY, "--input-shape", SHAPE, "-o", tmp_path / "m.onnx", *flags)
    assert_one_line_error(res, needle, code=1 if flags[0] == "--like" else 2)
    assert not (tmp_path / "m.onnx").exists()


def test_zoo_models_refuse_declarations(run_cli, tmp_path):
    res = run_cli("export", "us-frame-screen", "-o", tmp_path / "m.onnx", "--intensity", "uint8")
    assert_one_line_error(res, "zoo models carry them in their card", code=2)


def test_signal_declaration_and_like(run_cli, tmp_path, tiny_models):
    sig = run_cli("export", "fixtures.tiny_models:tiny_conv1d", "--input-shape", "1x3x256", "-o", tmp_path / "s.onnx",
                  "--leads", "II,V1,V5", "--sample-rate", "250", "--units", "uV", report=True)
    assert sig.returncode == 0, sig.stderr[-2000:]
    pre = read_metadata(tmp_path / "s.onnx").preprocessing
    assert pre["kind"] == "signal" and pre["leads"] == ["II", "V1", "V5"] and pre["sample_rate_hz"] == 250
    assert pre["samples"] == 256 and pre["units"] == "uV" and "assumed" not in pre
    bad = run_cli("export", "fixtures.tiny_models:tiny_conv1d", "--input-shape", "1x3x256", "-o", tmp_path / "t.onnx",
                  "--leads", "II,V1", "--sample-rate", "250")
    assert_one_line_error(bad, "names 2 lead(s) but the input has 3", code=2)

    like = run_cli("export", TINY, "--input-shape", "1x1x48x48", "-o", tmp_path / "l.onnx", "--like", "cxr-densenet-tiny",
                   "--labels", "a,b,c", report=True)
    assert like.returncode == 0, like.stderr[-2000:]
    meta = read_metadata(tmp_path / "l.onnx")
    assert meta.task == "multilabel-classification" and meta.labels == ["a", "b", "c"]
    assert meta.preprocessing["modality"] == "CR" and meta.preprocessing["height"] == 48
    assert "assumed" not in meta.preprocessing and not any("assumed" in n for n in like.report["notes"])


def test_preprocess_file_fills_the_rest_and_says_what_it_assumed(run_cli, tmp_path, tiny_models):
    prep = tmp_path / "prep.json"
    prep.write_text(json.dumps({"preprocessing": {"kind": "image", "modality": "US", "intensity": "uint8"}}))
    res = run_cli("export", TINY, "--input-shape", SHAPE, "-o", tmp_path / "m.onnx", "--preprocess", prep,
                  "--mean", "0.2", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    pre = read_metadata(tmp_path / "m.onnx").preprocessing
    assert pre["modality"] == "US" and pre["intensity"] == "uint8" and pre["mean"] == [0.2]
    assert pre["assumed"] == ["std"] and pre["height"] == 32 and pre["channels"] == 1


CHAINS = {  # model, kwargs, outputs; importing MONAI alone costs 10-20 s, so its chains are slow
    "tiny": ("fixtures.tiny_models:tiny_conv", json.dumps({"num_classes": 14}), 14),
    "monai-densenet121": (DENSENET, DENSENET_KWARGS, 14),
}


@pytest.mark.parametrize("model, declared", [
    ("tiny", False),
    pytest.param("monai-densenet121", False, marks=pytest.mark.slow),
    pytest.param("monai-densenet121", True, marks=pytest.mark.slow),
])
def test_own_model_path(run_cli, tmp_path, tiny_models, model, declared):
    """export → quantize --calib PNG and DICOM folders → compile intel-cpu → build, through the CLI."""
    ref, kwargs, _ = CHAINS[model]
    png, dcm = _image_folders(tmp_path)
    onnx_path = tmp_path / "m.onnx"
    flags = DECLARED if declared else []
    exp = run_cli("export", ref, "--model-kwargs", kwargs, "--input-shape", SHAPE, "-o", onnx_path,
                  *flags, report=True)
    assert exp.returncode == 0, exp.stderr[-2000:]
    meta = read_metadata(onnx_path)
    assert meta.extra["source"]["ref"] == ref and meta.extra["source"]["kwargs"] == json.loads(kwargs)
    assumed_in_export = any("preprocessing assumed" in n for n in exp.report["notes"])
    assert assumed_in_export is not declared
    if declared:
        assert meta.task == "multilabel-classification" and len(meta.labels) == 14
        assert meta.preprocessing["intensity"] == "window" and "assumed" not in meta.preprocessing
    else:
        assert meta.preprocessing["intensity"] == "minmax" and meta.preprocessing["mean"] is None
        assert set(meta.preprocessing["assumed"]) >= {"intensity", "mean", "std"}
        ins = run_cli("inspect", onnx_path, report=True)
        assert ins.report["preprocessing_status"].startswith("assumed")

    for source in (png, dcm):
        q = run_cli("quantize", onnx_path, "-o", tmp_path / f"q-{source.name}.onnx", "--calib", source,
                    "--calib-size", "6", report=True)
        assert q.returncode == 0, q.stderr[-2000:]
        assert any("preprocessing assumed" in n for n in q.report["notes"]) is not declared

    bundle = tmp_path / "bundle"
    comp = run_cli("compile", onnx_path, "--target", "intel-cpu", "--precision", "int8", "--calib", png,
                   "-o", bundle, "--option", "calib_samples=6", report=True)
    assert comp.returncode == 0, comp.stderr[-2000:]
    assert comp.report["written"] and comp.report["precision"] == "int8"
    assert any("preprocessing assumed" in n for n in comp.report["notes"]) is not declared

    built = run_cli("build", ref, "--model-kwargs", kwargs, "--input-shape", SHAPE, *flags,
                    "--target", "intel-cpu", "--precision", "int8", "-o", tmp_path / "built", "--calib", dcm, "--runs", "2", "--warmup", "0",
                    report=True)
    assert built.returncode == 0, built.stderr[-2000:]
    assert built.report["precision"] == "int8" and all(s["status"] in ("ok", "skipped") for s in built.report["steps"])
    assert (tmp_path / "built" / "manifest.json").is_file()


def test_argparse_stays_in_the_commands():
    """Flags are parsed in medge/commands/ (and medge_cli.py); the rooms below take values.  The
    device-side scripts under devices/templates/ run on their own and keep their own argparse."""
    import ast

    import medge

    root = Path(medge.__file__).parent
    importers = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] == "commands" or rel.parts[:2] == ("devices", "templates"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            if any(n and n.split(".")[0] == "argparse" for n in names):
                importers.append(str(rel))
    assert importers == [], f"move the argparse parts of {importers} to medge/commands/"
