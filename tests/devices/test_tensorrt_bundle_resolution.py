"""A Jetson bundle resolves to the engine built on the device; before that, one line says how to build
it (issue 14).  The engine file written here is a placeholder that only tests path resolution: no
TensorRT runs in this suite."""

from __future__ import annotations

import json

import pytest
from device_checks import compile_cli
from fixtures.cli_checks import assert_one_line_error, run_medge


def _ort_has_gpu_ep() -> bool:
    import onnxruntime as ort

    return bool({"TensorrtExecutionProvider", "CUDAExecutionProvider"} & set(ort.get_available_providers()))


needs_cpu_only_ort = pytest.mark.skipif(_ort_has_gpu_ep(), reason="onnxruntime here has a CUDA/TensorRT EP, which runs the ONNX")


@pytest.fixture(scope="module")
def jetson_bundle(tmp_path_factory, tiny_onnx):
    out = tmp_path_factory.mktemp("trt") / "jetson"
    proc = run_medge(["compile", tiny_onnx, "-t", "jetson-orin-nano", "-o", out])
    assert proc.returncode == 0, proc.stderr
    return out


def _copy(bundle, tmp_path):
    import shutil

    dest = tmp_path / "bundle"
    shutil.copytree(bundle, dest)
    return dest


@needs_cpu_only_ort
def test_before_the_engine_is_built_profile_and_compare_say_how(run_cli, jetson_bundle, tiny_onnx):
    for argv in (("profile", jetson_bundle), ("compare", tiny_onnx, jetson_bundle), ("compare", jetson_bundle, "--reference")):
        res = run_cli(*argv, report=True)
        line = assert_one_line_error(res, "build the engine on the device first", f"bash {jetson_bundle}/build_engine.sh")
        assert "@onnxruntime" in line and "--device ssh://" in line  # what can run here instead
        assert res.report["ok"] is False


def test_the_onnx_in_the_bundle_can_be_checked_here(run_cli, jetson_bundle, tiny_onnx):
    res = run_cli("compare", tiny_onnx, f"{jetson_bundle}@onnxruntime", report=True)
    assert res.returncode == 0, res.stderr
    (row,) = res.report["artifacts"]
    assert row["runtime"] == "onnxruntime" and row["precision"] == "fp16" and row["limits"]["from"] == "fp16 defaults"
    ref = run_cli("compare", f"{jetson_bundle}@onnxruntime", "--reference", report=True)
    assert ref.returncode == 0, ref.stderr
    assert ref.report["n_inputs"] == 4 and ref.report["artifacts"][0]["passed"]


def test_resolution_picks_the_built_engine(run_cli, jetson_bundle, tmp_path):
    from medge.runtimes.artifacts import resolve_artifact

    bundle = _copy(jetson_bundle, tmp_path)
    (bundle / "device").mkdir()
    (bundle / "device" / "model.engine").write_bytes(b"placeholder: resolution only, not a TensorRT engine")
    ref = resolve_artifact(bundle)
    assert ref.path == bundle / "device" / "model.engine" and ref.runtime == "tensorrt" and ref.device == "cuda"
    assert ref.onnx == bundle / "model.onnx" and ref.meta is not None and ref.precision == "fp16"
    assert resolve_artifact(bundle, "onnxruntime").path == bundle / "model.onnx"
    # Through the CLI, profile now goes for the engine (here: no tensorrt package or no GPU), not the ONNX.
    res = run_cli("profile", bundle, "--in-process")
    line = assert_one_line_error(res, "tensorrt")
    assert "build the engine" not in line
    assert run_cli("verify", bundle).returncode == 0  # device/ files are not part of the manifest


def test_readme_goes_on_after_building_the_engine(jetson_bundle):
    readme = (jetson_bundle / "README.txt").read_text()
    for needle in ("bash build_engine.sh", "medge profile <bundle>", "trtexec --loadEngine=device/model.engine",
                   "medge compare <bundle> --reference", "reference/inputs.npz", "input   image 1x1x64x64 float",
                   "output  probs", "Labels (output order): atelectasis, cardiomegaly, effusion, pneumothorax",
                   "modality CR", "mean [0.5]", "--expect-sha256"):
        assert needle in readme, needle
    assert "DLA" not in readme  # a GPU-only target has no DLA line
    cfg = json.loads((jetson_bundle / "engine_config.json").read_text())
    assert "int8" not in cfg and "fp16" not in cfg  # builder flags live under builder_flags
    assert cfg["builder_flags"] == {"strongly_typed": False, "fp16": True, "int8": False}


def test_dla_readme_names_the_gpu_fallback_ops(run_cli, tiny_onnx, tmp_path):
    out = tmp_path / "dla"
    assert compile_cli(run_cli, tiny_onnx, "jetson-agx-orin-dla", out, "--precision", "fp16").returncode == 0
    readme = (out / "README.txt").read_text()
    line = next(ln for ln in readme.splitlines() if "instead of the DLA" in ln)
    assert line.startswith("DLA core 0; ops that will run on the GPU instead of the DLA: GlobalAveragePool"), line


def test_int8_engine_config_is_not_contradictory(tiny_onnx, tmp_path):
    from medge.devices.recipes import CompileContext
    from medge.devices.recipes.tensorrt import engine_config
    from medge.devices.target import get_target
    from medge.common.metadata import read_metadata

    for target in ("jetson-orin-nano", "jetson-xavier-nx"):
        profile = get_target(target)
        ctx = CompileContext(onnx_path=tiny_onnx, meta=read_metadata(tiny_onnx), target=profile, precision="int8",
                             calib_source=None, eval_source=None, max_drop=None, out_dir=tmp_path, work_dir=tmp_path,
                             options=profile.options({}))
        cfg = engine_config(ctx, "model.int8.onnx")
        assert cfg["precision"] == "int8" and "int8" in cfg["precision_mode"] and "int8" not in cfg
        flags = cfg["builder_flags"]
        assert flags["strongly_typed"] or flags["int8"]  # int8 always comes from one of the two
