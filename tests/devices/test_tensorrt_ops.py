"""TensorRT op-coverage preflight on graphs built with onnx.helper (supported, fallback, unsupported)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from medge.devices.tensorrt_ops import OP_TABLES, check_tensorrt_ops


def _model(nodes, inits=(), *, shape=(1, 8, 32, 32), opset=13, extra_opsets=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])


def _w(name, shape):
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def _ops(entries):
    return {e["op"] for e in entries}


def test_supported_conv_net_builds_everywhere():
    m = _model([
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Sigmoid", ["p"], ["y"]),
    ], [_w("w", (8, 8, 3, 3))])
    for table in OP_TABLES:
        pre = check_tensorrt_ops(m, table)
        assert pre.ok and not pre.fallback and pre.supported == ["Conv", "MaxPool", "Relu", "Sigmoid"], table
    dla = check_tensorrt_ops(m, "tensorrt-10.3", dla=True)
    assert dla.ok and not dla.fallback and dla.device == "DLA"


def test_unsupported_ops_depend_on_the_tensorrt_version():
    m = _model([
        helper.make_node("Flatten", ["x"], ["f"]),
        helper.make_node("NonZero", ["f"], ["nz"]),
        helper.make_node("Unique", ["f"], ["u"]),
        helper.make_node("Identity", ["f"], ["y"]),
    ])
    old = check_tensorrt_ops(m, "tensorrt-8.2")
    new = check_tensorrt_ops(m, "tensorrt-10.3")
    assert _ops(old.unsupported) == {"NonZero", "Unique"} and not old.ok
    assert _ops(new.unsupported) == {"Unique"} and "NonZero" in new.supported
    assert any("int64" in w for w in old.warnings) and not new.warnings


def test_dla_fallbacks_are_listed_with_reasons():
    m = _model([
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),  # 32x32 window > DLA limit of 8
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "m"], ["mm"]),  # not a DLA layer
        helper.make_node("Erf", ["mm"], ["e"]),  # not a DLA layer
        helper.make_node("MaxPool", ["c"], ["big"], kernel_shape=[9, 9]),  # window > 8
        helper.make_node("Concat", ["e", "e"], ["y"], axis=0),  # not the channel axis
    ], [_w("w", (8, 8, 3, 3)), _w("m", (8, 4))])
    gpu = check_tensorrt_ops(m, "tensorrt-10.3")
    assert gpu.ok and not gpu.fallback
    dla = check_tensorrt_ops(m, "tensorrt-10.3", dla=True)
    assert dla.ok  # fallbacks still build with --allowGPUFallback
    reasons = {f["op"]: f["reason"] for f in dla.fallback}
    assert set(reasons) == {"GlobalAveragePool", "MatMul", "Erf", "MaxPool", "Concat"}
    assert "exceeds the DLA window limit of 8" in reasons["GlobalAveragePool"]
    assert "not a DLA layer" in reasons["MatMul"] and "channel axis" in reasons["Concat"]
    assert dla.supported == ["Conv", "Flatten"]  # a static Flatten is a DLA shuffle


def test_static_restrictions():
    qdq = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"]),
    ]
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    m_bad = _model([*qdq, helper.make_node("Identity", ["dq"], ["y"])],
                   [scale, numpy_helper.from_array(np.array(128, np.uint8), "zp")])
    m_good = _model([*qdq, helper.make_node("Identity", ["dq"], ["y"])],
                    [scale, numpy_helper.from_array(np.array(0, np.int8), "zp")])
    bad = check_tensorrt_ops(m_bad, "tensorrt-10.3")
    assert _ops(bad.unsupported) == {"QuantizeLinear", "DequantizeLinear"}
    assert "zero point must be 0" in bad.unsupported[0]["reason"]
    assert check_tensorrt_ops(m_good, "tensorrt-10.3").ok

    resize = _model([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="cubic")],
                    [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")])
    assert "cubic" in check_tensorrt_ops(resize, "tensorrt-10.3").unsupported[0]["reason"]
    nearest = _model([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest")],
                     [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")])
    assert check_tensorrt_ops(nearest, "tensorrt-10.3", dla=True).fallback == []

    pool_idx = _model([helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2])])
    assert "Indices" in check_tensorrt_ops(pool_idx, "tensorrt-8.5").unsupported[0]["reason"]


def test_custom_domain_and_opset_limits():
    custom = _model([helper.make_node("FusedConv", ["x"], ["y"], domain="com.microsoft")],
                    extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    pre = check_tensorrt_ops(custom, "tensorrt-10.3")
    assert pre.unsupported[0]["op"] == "com.microsoft::FusedConv" and "plugin" in pre.unsupported[0]["reason"]
    opset18 = _model([helper.make_node("Relu", ["x"], ["y"])], opset=18)
    assert check_tensorrt_ops(opset18, "tensorrt-10.3").ok
    too_new = check_tensorrt_ops(opset18, "tensorrt-8.5")
    assert too_new.unsupported[0]["op"] == "opset 18" and "--opset 17" in too_new.unsupported[0]["reason"]


def test_layernorm_needs_tensorrt_10():
    m = _model([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)],
               [_w("g", (32,)), _w("b", (32,))], opset=17)
    assert "LayerNormalization" in _ops(check_tensorrt_ops(m, "tensorrt-8.5").unsupported)
    assert check_tensorrt_ops(m, "tensorrt-10.3").ok


def test_subgraph_nodes_are_checked():
    then_g = helper.make_graph([helper.make_node("Unique", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Relu", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    cond = numpy_helper.from_array(np.array(True), "cond")
    m = _model([helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)], [cond])
    assert "Unique" in _ops(check_tensorrt_ops(m, "tensorrt-10.3").unsupported)


def test_unknown_table():
    with pytest.raises(KeyError):
        check_tensorrt_ops(_model([helper.make_node("Relu", ["x"], ["y"])]), "tensorrt-7")


@pytest.mark.slow
def test_zoo_models_preflight(tmp_path):
    """Real zoo architectures (TorchScript exporter, opset 17): what each Jetson would do with them."""
    torch = pytest.importorskip("torch")
    zoo = pytest.importorskip("medge.zoo")

    def preflights(name):
        card = zoo.get_card(name)
        path = tmp_path / f"{name}.onnx"
        torch.onnx.export(zoo.build_model(name, pretrained=False), (torch.zeros(*card.input_shape),), str(path),
                          opset_version=17, dynamo=False, input_names=[card.input_name])
        model = onnx.load(str(path))
        return (check_tensorrt_ops(model, "tensorrt-10.3"), check_tensorrt_ops(model, "tensorrt-8.5"),
                check_tensorrt_ops(model, "tensorrt-10.3", dla=True))

    unet10, unet85, unet_dla = preflights("us-lesion-unet")
    assert unet10.ok and unet85.ok and unet_dla.ok
    # MONAI's stride-2 transposed convolutions are padded: the DLA cannot run them.
    assert {f["op"] for f in unet_dla.fallback} == {"ConvTranspose"}
    assert "Conv" in unet_dla.supported and "PRelu" in unet_dla.supported

    vit10, vit85, vit_dla = preflights("cxr-hybrid-vit")
    assert vit10.ok
    # LayerNormalization (opset 17) is not parsed by TensorRT 8.5 (Xavier NX): re-export below opset 17.
    assert {u["op"] for u in vit85.unsupported} == {"LayerNormalization"}
    assert {"MatMul", "LayerNormalization", "Softmax"} <= {f["op"] for f in vit_dla.fallback}

    ecg10, _, ecg_dla = preflights("ecg-3to12")
    assert ecg10.ok
    assert any(f["op"] == "Conv" and "limit of 31" in f["reason"] for f in ecg_dla.fallback)


def test_every_tensorrt_target_names_a_table():
    from medge.devices import TARGETS, get_target

    tensorrt = [get_target(n) for n in TARGETS.names() if get_target(n).runtime == "tensorrt"]
    assert tensorrt and all(t.supported_ops in OP_TABLES for t in tensorrt)
    assert {OP_TABLES[t.supported_ops].version for t in tensorrt} == {t.toolkit.version for t in tensorrt}


def test_bad_table_file_is_rejected(tmp_path):
    import json

    from medge.devices.tensorrt_ops import TABLES_FILE, load_tables

    raw = json.loads(TABLES_FILE.read_text())
    path = tmp_path / "tensorrt_ops.json"
    for table, change, match in (("tensorrt-8.2", {"extends": "tensorrt-9"}, "unknown table 'tensorrt-9'"),
                                 ("tensorrt-8.5", {"unsupported_groups": ["strings"]}, "op group 'strings'"),
                                 ("tensorrt-10.3", {"max_opset": "20"}, "integer max_opset"),
                                 ("tensorrt-10.3", {"unsupported": "Unique"}, "list of op names")):
        bad = json.loads(json.dumps(raw))
        bad["tables"][table].update(change)
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=match):
            load_tables(path)
    raw["dla"]["limits"].pop("conv_kernel")
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="conv_kernel"):
        load_tables(path)
