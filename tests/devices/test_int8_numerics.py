"""Issue #26: INT8 judged by the target's numerics, a scheme that cannot saturate on this host, and
user parity tolerances (default suite; the MONAI DenseNet121 check is slow).

This host may have VNNI (no u8s8 saturation), so the tests check what holds on every host: the
scheme follows the CPU flags, the reduce-range scheme bounds every u8×s8 pair below int16 while the
full-range one does not on the saturating fixture, an ARM target's gate ran the unfused Q/DQ
simulation (equal to a numpy reference of the Q/DQ math), and the manifest records all of it.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from device_checks import compile_cli
from fixtures.cli_checks import assert_one_line_error
from medge.devices.int8_numerics import cpu_flags, host_ort_scheme

INT16_MAX = 32767


@pytest.fixture(scope="module")
def saturating(tmp_path_factory):
    """(saturating fixture ONNX, calibration .npy of 16 model-ready inputs in [0, 1))."""
    from medge.export import export_onnx

    root = tmp_path_factory.mktemp("saturating")
    model = root / "saturating.onnx"
    export_onnx("int8_fixtures:saturating_net", model, input_shape=(1, 1, 32, 32))
    calib = root / "calib.npy"
    np.save(calib, np.random.default_rng(0).random((16, 1, 32, 32), dtype=np.float32))
    return model, calib


def test_scheme_follows_the_cpu_flags(tmp_path):
    avx2 = host_ort_scheme({"avx2", "fma", "sse4_2"}, "x86_64")
    assert avx2["reduce_range"] is True and avx2["name"] == "u8s8-reduce-range" and "AVX2" in avx2["host_flags"]
    assert host_ort_scheme({"avx512bw", "avx2"}, "x86_64")["reduce_range"] is True
    for flags in ({"avx2", "avx512_vnni"}, {"avx2", "avx_vnni"}):
        assert host_ort_scheme(flags, "x86_64") == {**host_ort_scheme(flags, "x86_64"), "reduce_range": False}
    assert host_ort_scheme({"asimd", "asimddp"}, "aarch64")["reduce_range"] is False
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu avx2 fma\n")
    assert cpu_flags(info) == {"fpu", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def _max_pair(model_path, calib) -> int:
    """Largest |u8·s8 + u8·s8| any pair of the second conv could form: 255 (the largest activation code
    the calibration reaches) times twice the largest int8 weight code of that conv."""
    model = onnx.load(str(model_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = [inits[n.input[0]] for n in model.graph.node
               if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
               and inits[n.input[0]].dtype == np.int8 and inits[n.input[0]].ndim == 4]
    assert len(weights) == 2, "both convs quantized"
    w = int(np.abs(weights[1].astype(np.int32)).max())
    return 255 * w * 2


def test_reduce_range_scheme_cannot_saturate_where_full_range_does(saturating, tmp_path):
    from medge.quantize import QuantizeConfig, quantize_model

    model, calib = saturating
    pairs = {}
    for reduce in (False, True):
        out = tmp_path / f"q{int(reduce)}.onnx"
        quantize_model(QuantizeConfig(model=model, output=out, calib_source=str(calib), calib_size=16,
                                      options={"reduce_range": reduce}))
        pairs[reduce] = _max_pair(out, calib)
    assert pairs[False] > INT16_MAX >= pairs[True], pairs  # the fixture saturates u8s8 unless reduce_range


def test_saturating_model_compiles_for_local_with_the_scheme_named(run_cli, saturating, tmp_path):
    model, calib = saturating
    out = tmp_path / "bundle"
    res = compile_cli(run_cli, model, "local", out, "--precision", "int8", "--calib", calib)
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    gate = manifest["gate"]
    assert gate["passed"] is True and gate["parity"]["passed"] is True
    assert gate["numerics"]["name"] == "host-kernels"
    expected = host_ort_scheme()
    assert gate["int8_scheme"] == expected  # chosen from this host's /proc/cpuinfo flags
    if expected["reduce_range"]:
        assert _max_pair(out / "model.int8.onnx", calib) <= INT16_MAX
    assert "int8 scheme" in res.stdout and expected["name"] in res.stdout


def test_arm_target_is_gated_on_the_ideal_simulation(run_cli, saturating, tmp_path):
    from medge.quantize.parity_gate import artifact_runner, int8_parity

    model, calib = saturating
    out = tmp_path / "bundle"
    res = compile_cli(run_cli, model, "raspberry-pi-5", out, "--precision", "int8", "--calib", calib)
    assert res.returncode == 0, res.stderr[-2000:]
    gate = json.loads((out / "manifest.json").read_text())["gate"]
    numerics = gate["numerics"]
    assert numerics["name"] == "ideal-simulation" and numerics["runtime_options"] == {"emulate_qdq": True}
    assert "medge compare BUNDLE --reference" in numerics["confirm"]
    assert gate["int8_scheme"]["reduce_range"] is False  # ARM's kernels accumulate in 32 bits
    assert "ideal-simulation" in res.stdout
    unfused = int8_parity(model, str(calib), artifact_runner(out / "model.int8.onnx", "onnxruntime", emulate_qdq=True))
    assert gate["parity"]["min_cosine"] == pytest.approx(unfused["min_cosine"], abs=1e-12)
    assert gate["parity"]["max_channel_rms_error"] == pytest.approx(unfused["max_channel_rms_error"], abs=1e-12)


def test_ideal_simulation_equals_the_qdq_math(tmp_path):
    """The unfused session computes dq(q(x)) @ dq(W): a numpy reference of the Q/DQ math."""
    from medge.quantize.parity_gate import artifact_runner

    rng = np.random.default_rng(1)
    w_q = rng.integers(-127, 128, size=(16, 8), dtype=np.int8)
    w_scale, x_scale, x_zero = np.float32(0.02), np.float32(0.05), np.uint8(3)
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    inits = [numpy_helper.from_array(np.array(x_scale), "xs"), numpy_helper.from_array(np.array(x_zero), "xz"),
             numpy_helper.from_array(w_q, "wq"), numpy_helper.from_array(np.array(w_scale), "ws")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], inits)
    path = tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    x = rng.normal(0, 4, size=(4, 16)).astype(np.float32)
    got = artifact_runner(path, "onnxruntime", emulate_qdq=True)(x)[0]
    xq = np.clip(np.rint(x / x_scale) + x_zero, 0, 255)
    want = ((xq - x_zero) * x_scale).astype(np.float64) @ (w_q.astype(np.float64) * w_scale)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_quantize_tolerances_are_recorded_with_a_warning(run_cli, saturating, tmp_path):
    model, calib = saturating
    out = tmp_path / "q.onnx"
    res = run_cli("quantize", model, "-o", out, "--calib", calib, "--min-cosine", "0.5", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "--min-cosine 0.5 is looser than the default 0.9" in res.stderr
    limits = res.report["options"]["parity_limits"]
    assert limits["min_cosine"] == 0.5 and limits["max_channel_error"] == 0.2
    assert res.report["parity"]["min_cosine_required"] == 0.5 and res.report["parity"]["passed"] is True
    bad = run_cli("quantize", model, "-o", tmp_path / "r.onnx", "--calib", calib, "--min-cosine", "2")
    assert_one_line_error(bad, "--min-cosine", "at most 1", code=2)


@pytest.mark.slow
def test_max_channel_error_lets_random_densenet121_compile(run_cli, tmp_path):
    """A random-init MONAI DenseNet121 (14 logits near zero) with --max-channel-error 1.0 compiles, warned."""
    from medge.export import export_onnx

    model = tmp_path / "densenet121.onnx"
    export_onnx("medge.zoo.cnn:chexnet_densenet121", model, input_shape=(1, 1, 64, 64))
    out = tmp_path / "bundle"
    res = compile_cli(run_cli, model, "local", out, "--precision", "int8", "--calib", "synthetic:cxr",
                      "--max-channel-error", "1.0", "--option", "calib_samples=16")
    assert res.returncode == 0, res.stderr[-2000:]
    assert any("--max-channel-error 1 is looser than the default 0.2" in w for w in res.report["warnings"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tolerances"] == {"max_channel_error": 1.0}
    assert manifest["gate"]["parity"]["max_channel_rms_error_allowed"] == 1.0
