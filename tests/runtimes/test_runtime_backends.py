"""One template of shared runtime checks, subclassed per runtime and artifact format."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from tiny_artifacts import INPUT_SHAPE, OUTPUT_SHAPE, reference_output

from medge.common.errors import DataError, MedgeError, MissingDependencyError
from medge.runtimes import Runtime, open_runtime
from medge.runtimes.base import TensorInfo, dequantize_output, quantize_input
from medge.runtimes.feeds import adapt_inputs, layout_permutation, random_inputs, restore_outputs

RNG = np.random.default_rng(0)
X = RNG.standard_normal(INPUT_SHAPE).astype(np.float32)


class RuntimeTemplate:
    """Shared checks; subclasses say which runtime to use, how close it must be and, unless it is
    the tiny FP32 ONNX model, which artifact to load (`artifact`, or the `artifact_path` fixture)."""

    runtime: str
    atol: float = 1e-5
    input_shape: tuple[int, ...] = INPUT_SHAPE
    output_shape: tuple[int, ...] = OUTPUT_SHAPE

    def artifact(self, tiny):
        return tiny.onnx

    def to_model_layout(self, x: np.ndarray) -> np.ndarray:
        return x

    def from_model_layout(self, y: np.ndarray) -> np.ndarray:
        return y

    @pytest.fixture
    def artifact_path(self, tiny):
        return self.artifact(tiny)

    @pytest.fixture
    def rt(self, artifact_path):
        with open_runtime(artifact_path, self.runtime, threads=1) as rt:
            yield rt

    def feeds(self, rt: Runtime, x: np.ndarray = X) -> dict[str, np.ndarray]:
        return {rt.inputs()[0].name: self.to_model_layout(x)}

    def test_load_sets_fields(self, rt):
        assert rt.name == self.runtime and rt.load_ms > 0 and rt.threads == 1

    def test_io_metadata(self, rt):
        (inp,), (out,) = rt.inputs(), rt.outputs()
        assert tuple(inp.shape) == self.input_shape and inp.dtype == "float32"
        assert tuple(out.shape) == self.output_shape and out.dtype == "float32"
        assert json.dumps(inp.to_dict())

    def test_infer_shapes_dtypes_and_timing(self, rt):
        out = rt.infer(self.feeds(rt))
        (name, y), = out.items()
        assert name == rt.outputs()[0].name
        assert y.shape == self.output_shape and y.dtype == np.float32
        assert rt.last_infer_ms > 0

    def test_parity_with_torch(self, rt):
        for x in (X, RNG.standard_normal(INPUT_SHAPE).astype(np.float32)):
            y = self.from_model_layout(next(iter(rt.infer(self.feeds(rt, x)).values())))
            np.testing.assert_allclose(y, reference_output(x), atol=self.atol)

    def test_wrong_name_rank_dtype_raise_data_error(self, rt):
        name = rt.inputs()[0].name
        good = self.feeds(rt)[name]
        with pytest.raises(DataError, match="missing"):
            rt.infer({"nope": good})
        with pytest.raises(DataError, match="rank"):
            rt.infer({name: good[0]})
        with pytest.raises(DataError, match="dtype"):
            rt.infer({name: good.astype(np.float64)})
        with pytest.raises(DataError, match="shape"):
            rt.infer({name: np.zeros([d + 1 for d in good.shape], np.float32)})
        with pytest.raises(DataError, match="numpy"):
            rt.infer({name: good.tolist()})

    def test_context_manager_closes(self, artifact_path):
        with open_runtime(artifact_path, self.runtime) as rt:
            rt.infer(self.feeds(rt))
        with pytest.raises(RuntimeError, match="load"):
            rt.inputs()

    def test_random_inputs_feed_the_model(self, rt):
        feeds = random_inputs(rt.inputs(), seed=3, count=2)
        assert not np.array_equal(feeds[0][rt.inputs()[0].name], feeds[1][rt.inputs()[0].name])
        assert all(np.any(f[rt.inputs()[0].name] != 0) for f in feeds)
        assert rt.infer(feeds[0])

    def test_adapt_and_restore_match_reference_layout(self, rt):
        feeds = adapt_inputs([X], rt.inputs())
        (y,) = restore_outputs(rt.infer(feeds), rt.outputs(), [OUTPUT_SHAPE])
        np.testing.assert_allclose(y, reference_output(X), atol=self.atol)


class TestOnnxRuntime(RuntimeTemplate):
    runtime = "onnxruntime"

    def test_layer_profile_from_trace(self, tiny):
        with open_runtime(tiny.onnx, "onnxruntime", profiling=True) as rt:
            for _ in range(3):
                rt.infer(self.feeds(rt))
            layers = rt.layer_profile()
        ops = {row["op"] for row in layers}
        assert "Conv" in ops and all(row["calls"] >= 3 and row["total_us"] >= 0 for row in layers)

    def test_no_profile_without_option(self, rt):
        rt.infer(self.feeds(rt))
        assert rt.layer_profile() == []

    def test_unknown_device(self, tiny):
        with pytest.raises(MedgeError, match="unknown device 'npu'"):
            open_runtime(tiny.onnx, "onnxruntime", device="npu")

    def test_cuda_without_the_provider(self, tiny):
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.skip("this onnxruntime build has CUDA")
        with pytest.raises(MedgeError, match="needs CUDAExecutionProvider"):
            open_runtime(tiny.onnx, "onnxruntime", device="cuda")

    def test_corrupt_file(self, tmp_path):
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(b"not an onnx file")
        with pytest.raises(MedgeError, match="cannot load bad.onnx"):
            open_runtime(bad)


class TestOpenVinoOnnx(RuntimeTemplate):
    runtime = "openvino"

    def test_precision_hint_is_explicit_f32_on_cpu(self, rt):
        assert str(rt._compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"

    def test_threads_and_latency_hint(self, rt):
        assert rt._compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert "LATENCY" in str(rt._compiled.get_property("PERFORMANCE_HINT"))

    def test_bad_precision(self, tiny):
        with pytest.raises(MedgeError, match="unknown precision 'int4'"):
            open_runtime(tiny.onnx, "openvino", precision="int4")

    def test_missing_device(self, tiny):
        with pytest.raises(MedgeError, match="device 'NPU' is not available"):
            open_runtime(tiny.onnx, "openvino", device="NPU")


class TestOpenVinoIR(RuntimeTemplate):
    runtime = "openvino"

    def artifact(self, tiny):
        return tiny.ir

    def test_layer_profile_perf_count(self, tiny):
        with open_runtime(tiny.ir, profiling=True) as rt:
            for _ in range(2):
                rt.infer(self.feeds(rt))
            layers = rt.layer_profile()
        assert layers and any(r["op"] == "Convolution" for r in layers)
        assert all(r["calls"] == 2 for r in layers)

    def test_missing_bin(self, tiny, tmp_path):
        xml = tmp_path / "lonely.xml"
        xml.write_text(tiny.ir.read_text())
        with pytest.raises(MedgeError, match="no weights file lonely.bin"):
            open_runtime(xml)


class TestLiteRt(RuntimeTemplate):
    runtime = "litert"

    def artifact(self, tiny):
        return tiny.tflite

    def test_xnnpack_is_the_default_delegate(self, rt, tiny):
        assert rt.xnnpack_active
        with open_runtime(tiny.tflite, xnnpack=False) as plain:
            assert not plain.xnnpack_active
            y = next(iter(plain.infer(self.feeds(plain)).values()))
        np.testing.assert_allclose(y, reference_output(X), atol=self.atol)

    def test_no_layer_profile(self, rt):
        rt.infer(self.feeds(rt))
        assert rt.layer_profile() == []


class TestLiteRtChannelsLast(RuntimeTemplate):
    runtime = "litert"
    input_shape = (1, 16, 16, 1)
    output_shape = (1, 16, 16, 2)

    def artifact(self, tiny):
        return tiny.tflite_nhwc

    def to_model_layout(self, x):
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def from_model_layout(self, y):
        return y.transpose(0, 3, 1, 2)


HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TENSORRT, reason="tensorrt is not installed (needs an NVIDIA GPU); runs on Jetson/CUDA hosts")
class TestTensorRt(RuntimeTemplate):
    runtime = "tensorrt"
    atol = 1e-3

    @pytest.fixture(scope="class")
    def engine(self, tiny, tmp_path_factory):
        import torch
        from polygraphy.backend.trt import engine_from_network, network_from_onnx_path, save_engine

        if not torch.cuda.is_available():
            pytest.skip("tensorrt is installed but no CUDA GPU is visible")
        path = tmp_path_factory.mktemp("trt") / "tiny.engine"
        save_engine(engine_from_network(network_from_onnx_path(str(tiny.onnx))), str(path))
        return path

    @pytest.fixture
    def artifact_path(self, engine):
        return engine


def test_tensorrt_missing_dependency_is_one_clear_error(tmp_path):
    if HAVE_TENSORRT:
        pytest.skip("tensorrt is installed here; the missing-dependency path cannot be exercised")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 64)
    with pytest.raises(MissingDependencyError, match=r"pip install 'medge\[tensorrt\]'"):
        open_runtime(engine)


def test_unknown_suffix_and_runtime(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(MedgeError, match="pass --runtime"):
        open_runtime(f)
    with pytest.raises(MedgeError, match="did you mean 'openvino'"):
        open_runtime(f, "openvin")


def test_missing_artifact(tmp_path):
    with pytest.raises(MedgeError, match="artifact not found"):
        open_runtime(tmp_path / "none.onnx")


def test_int8_quantization_helpers_round_trip():
    info = TensorInfo("x", (1, 4), "int8", (0.5, -3))
    q = quantize_input(np.array([[0.0, 1.0, -70.0, 70.0]], np.float32), info)
    assert q.dtype == np.int8 and q.tolist() == [[-3, -1, -128, 127]]
    np.testing.assert_allclose(dequantize_output(q, info), [[0.0, 1.0, -62.5, 65.0]])
    u8 = TensorInfo("x", (1, 2), "uint8", (1 / 255, 0))
    assert quantize_input(np.array([[0.0, 1.0]]), u8).tolist() == [[0, 255]]


def test_layout_permutation_choices():
    assert layout_permutation((1, 3, 8, 8), (1, 3, 8, 8)) == (0, 1, 2, 3)
    assert layout_permutation((1, 3, 8, 8), (1, 8, 8, 3)) == (0, 2, 3, 1)
    assert layout_permutation((1, 8, 8, 3), (1, 3, 8, 8)) == (0, 3, 1, 2)
    assert layout_permutation((1, 3, 8, 8), (1, None, 8, 8)) == (0, 1, 2, 3)
    assert layout_permutation((1, 3, 8, 8), (1, 5, 8, 8)) is None
