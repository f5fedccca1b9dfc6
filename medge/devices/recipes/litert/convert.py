"""PyTorch → LiteRT (.tflite) conversion with litert-torch: FP32, FP16 weights, or full-integer INT8.

* INT8 (``quantizer=pt2e``): PT2E static quantization (`PT2EQuantizer` with the symmetric
  per-channel config) of the graph `medge.devices.recipes.litert.fold` prepared (BatchNorms folded or made
  depthwise convs), with the add/mul/concat/pool/softmax annotations the quantizer misses under
  this torch version, calibrated on the model's preprocessed samples; the converted graph is moved
  to eval mode before ``litert_torch.convert``.  The default INT8 route is ai-edge-quantizer over
  the FP32 .tflite (`medge.devices.recipes.litert.ladder`).  Both are fully integer, int8 inputs and
  outputs included, which is what the Qualcomm HTP and MediaTek APU delegates need.
* FP16: the FP32 flatbuffer with its weights cast to float16 by ``ai_edge_quantizer``
  (``FLOAT_CASTING``), the usual choice for GPU delegates.
* NHWC: `channel_last=True` wraps the module with ``litert_torch.to_channel_last_io`` so that 4-D
  image inputs/outputs (and 3-D signals) are channel-last, as mobile delegates prefer.

`torch_source` picks the PyTorch module: the model reference when it is known and agrees with the
ONNX file, otherwise the ONNX graph itself through `medge.devices.recipes.litert.onnx_to_torch`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medge.common.errors import DataError, ExportError, MedgeError, ModelLoadError, TargetError
from medge.common.fileio import atomic_path
from medge.common.registry import import_optional
from medge.export import load_model
from medge.export.input_specs import InputSpec

# Max |torch - onnx| (relative to the output range) for the model reference to count as the same model.
SOURCE_MATCH_TOL = 1e-3


@dataclass
class TorchSource:
    """The PyTorch module a .tflite is made from and where it came from."""

    module: Any
    kind: str  # "model_ref" | "onnx"
    reference: str
    notes: list[str] = field(default_factory=list)


def sample_arrays(sample: Any) -> list[np.ndarray]:
    """A model-ready sample as arrays in input order: an array (one input) or a feed dict (several)."""
    return [np.asarray(v) for v in sample.values()] if isinstance(sample, dict) else [sample]


def _run_onnx(onnx_path: Path, x: Any) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), sample_arrays(x))})


def _run_torch(module: Any, x: Any) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        out = module(*(torch.from_numpy(a) for a in sample_arrays(x)))
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().numpy() for o in outs]


def _max_rel_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float("inf")
    worst = 0.0
    for x, y in zip(a, b):
        scale = max(float(np.abs(y).max()), 1e-6)
        worst = max(worst, float(np.abs(x - y).max()) / scale)
    return worst


def _input_shapes(sample: Any) -> Any:
    """What `load_model` takes as the input shape(s): one shape, or a named spec per input of a
    feed dict (a factory of several inputs cannot be probed with the first one alone)."""
    if not isinstance(sample, dict):
        return tuple(sample.shape)

    return [InputSpec(name, tuple(a.shape), np.asarray(a).dtype.name) for name, a in sample.items()]


def torch_source(onnx_path: Path, model_ref: str | None, sample: Any) -> TorchSource:
    """The PyTorch module for `onnx_path`: `model_ref` when it reproduces the ONNX outputs on
    `sample`, else the ONNX graph converted in-house (static shapes)."""
    from medge.devices.recipes.litert.onnx_to_torch import onnx_to_torch

    reference_out = _run_onnx(onnx_path, sample)
    notes: list[str] = []
    if model_ref:
        try:
            loaded = load_model(model_ref, input_shape=_input_shapes(sample))
            diff = _max_rel_diff(_run_torch(loaded.module, sample), reference_out)
        except (ModelLoadError, ExportError, DataError) as exc:
            diff, loaded = float("inf"), None
            notes.append(f"model reference '{model_ref}' could not be loaded ({exc}); converted the ONNX graph instead")
        if loaded is not None and diff <= SOURCE_MATCH_TOL:
            return TorchSource(loaded.module, "model_ref", model_ref, notes)
        if loaded is not None:
            notes.append(
                f"model reference '{model_ref}' differs from the ONNX file (max rel diff {diff:.3g}); "
                "converted the ONNX graph instead"
            )
    module = onnx_to_torch(onnx_path)
    diff = _max_rel_diff(_run_torch(module, sample), reference_out)
    if diff > SOURCE_MATCH_TOL:
        raise ExportError(f"the ONNX→PyTorch conversion of {onnx_path.name} disagrees with ONNX Runtime (max rel diff {diff:.3g}); "
                          "pass the PyTorch model with --model-ref")
    return TorchSource(module, "onnx", str(onnx_path.name), notes)


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence litert-torch's progress bars on stdout (our stdout is the report)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _channel_last(module: Any, sample: Any) -> Any:
    """`module` with its 3-D/4-D inputs and outputs channel-last (a click's (x, y) stays as is)."""
    import litert_torch

    outs = _run_torch(module, sample)
    out_idx = [i for i, o in enumerate(outs) if o.ndim >= 3]
    args = [i for i, a in enumerate(sample_arrays(sample)) if a.ndim >= 3]
    return litert_torch.to_channel_last_io(module, args=args, outputs=out_idx).eval()


def model_layout(sample: Any, channel_last: bool) -> list[np.ndarray]:
    """A sample's arrays in the .tflite's input layout (channel-last 3-D/4-D arrays when `channel_last`)."""
    return [np.ascontiguousarray(np.moveaxis(a, 1, -1)) if channel_last and a.ndim >= 3 else a
            for a in sample_arrays(sample)]


def convert_tflite(
    module: Any,
    sample: Any,
    output: Path,
    *,
    precision: str,
    calibration: Sequence[Any] = (),
    channel_last: bool = False,
) -> None:
    """Convert `module` (NCHW/NCL float input like `sample`) to a .tflite at `output` (atomic).

    `precision` is fp32, fp16 or int8; int8 needs `calibration` (model-ready float32 arrays).
    A model with several inputs takes feed dicts (input order) as `sample` and `calibration`.
    """
    import torch

    from medge.devices.recipes.litert.fold import fold_for_npu
    from medge.devices.recipes.litert.rewrites import replace_conv_transpose, replace_leaky_relu, replace_prelu

    litert_torch = import_optional("litert_torch", what="LiteRT conversion")
    if precision not in ("fp32", "fp16", "int8"):
        raise MedgeError(f"unknown tflite precision '{precision}'; choices: fp32, fp16, int8")
    module = copy.deepcopy(module)
    replace_conv_transpose(module)  # strided transposed convs do not legalise to TFLite otherwise
    replace_prelu(module)  # the INT8 quantizer leaves PReLU in float
    replace_leaky_relu(module)  # and LeakyReLU
    if channel_last:
        module = _channel_last(module, sample)

    def to_model(x: Any) -> tuple:
        return tuple(torch.from_numpy(a) for a in model_layout(x, channel_last))

    example = to_model(sample)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if precision == "int8" and not calibration:
        raise MedgeError("INT8 tflite conversion needs calibration data; pass --calib (e.g. synthetic:us-frame)")
    with _quiet(), atomic_path(output) as tmp:
        try:
            if precision == "int8":
                edge = _convert_int8(litert_torch, module, example, [to_model(c) for c in calibration])
            else:
                graph, _ = fold_for_npu(module, example)  # the graph ai-edge-quantizer quantizes
                torch.nn.Module.train(graph, False)
                edge = litert_torch.convert(graph, example)
        except MedgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - torch.export / PT2E / the TFLite converter raise many types
            reason = " ".join(str(exc).split())[:300]
            raise TargetError(f"litert-torch could not convert the model to a {precision} .tflite: {reason} "
                              "(--verbose shows the converter's trace; try another --target or --precision)") from exc
        edge.export(str(tmp))
        if precision == "fp16":
            _cast_weights_fp16(tmp)


def _annotate_elementwise(gm: Any, config: Any) -> None:
    """Annotate the ops the quantizer's own pattern matchers miss under this torch version.

    litert-torch finds adds, muls, concats and poolings through ``source_fn_stack`` metadata,
    which the graphs ``torch.export`` makes in this torch version do not carry.  Unannotated, each
    would be left for the TFLite converter to guess ("Missing quantization parameter on the
    output") or run in float.  Arithmetic ops (add/sub/mul/relu) get their own output scale;
    scale-preserving ops (max/avg pooling, mean, concat) share the scale of their first input,
    which is what TFLite's int8 kernels require (inputs and output of one scale, no requantize).
    """
    import torch
    from litert_torch.quantize.pt2e_quantizer_utils import (
        get_fixed_qparams_qspec, get_input_act_qspec, get_output_act_qspec)
    from torch.fx import Node
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    aten = torch.ops.aten
    arithmetic = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.relu.default, aten.matmul.default,
                  aten.bmm.default, aten.gelu.default, aten.silu.default, aten.hardswish.default, aten.tanh.default}
    scale_preserving = {aten.max_pool2d.default, aten.avg_pool2d.default, aten.adaptive_avg_pool2d.default,
                        aten.mean.dim, aten.max_pool1d.default, aten.avg_pool1d.default, aten.transpose.int,
                        aten.permute.default, aten.reshape.default, aten.view.default, aten.select.int,
                        aten.flatten.using_ints, aten.squeeze.dim, aten.unsqueeze.default}
    in_spec, out_spec = get_input_act_qspec(config), get_output_act_qspec(config)
    fixed = get_fixed_qparams_qspec(config)
    for node in gm.graph.nodes:
        if node.op != "call_function" or "quantization_annotation" in node.meta:
            continue
        val = node.meta.get("val")
        if val is None or not getattr(val, "dtype", torch.int64).is_floating_point:
            continue
        if node.target in arithmetic:
            inputs = {a: in_spec for a in node.args[:2] if isinstance(a, Node)}
            annotation = QuantizationAnnotation(input_qspec_map=inputs, output_qspec=out_spec, _annotated=True)
        elif node.target in scale_preserving and isinstance(node.args[0], Node):
            first = node.args[0]
            annotation = QuantizationAnnotation(input_qspec_map={first: in_spec},
                                                output_qspec=SharedQuantizationSpec((first, node)), _annotated=True)
        elif node.target is aten.softmax.int and isinstance(node.args[0], Node):
            # TFLite's int8 SOFTMAX needs output scale 1/256, zero point -128 (the fixed-qparams spec)
            annotation = QuantizationAnnotation(input_qspec_map={node.args[0]: in_spec}, output_qspec=fixed,
                                                _annotated=True)
        elif node.target is aten.cat.default and node.args[0] and isinstance(node.args[0][0], Node):
            first, *rest = node.args[0]
            shared = SharedQuantizationSpec((first, node))
            inputs = {first: in_spec, **{a: shared for a in rest if isinstance(a, Node)}}
            annotation = QuantizationAnnotation(input_qspec_map=inputs, output_qspec=shared, _annotated=True)
        else:
            continue
        node.meta["quantization_annotation"] = annotation


def _convert_int8(litert_torch: Any, module: Any, example: tuple, calibration: list) -> Any:
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.pt2e_quantizer_utils import OP_TO_ANNOTATOR
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from medge.devices.recipes.litert.fold import fold_for_npu

    class ElementwiseAwareQuantizer(PT2EQuantizer):
        """litert-torch's PT2E quantizer plus the add/mul/relu annotations it misses here."""

        def annotate(self, model: Any) -> Any:
            model = super().annotate(model)
            _annotate_elementwise(model, self.global_config)
            OP_TO_ANNOTATOR["fixed_qparams"](model, self.global_config)  # sigmoid/softmax after those
            return model

    quantizer = ElementwiseAwareQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    graph, _ = fold_for_npu(module, example)
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for x in calibration:
            prepared(*x)
    converted = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
    # The graph's ops were specialised to eval at export (batch_norm(training=False), no dropout);
    # move_exported_model_to_eval rewrites any train-mode BN/dropout left and this clears the
    # nn.Module flag litert-torch checks (GraphModule.eval() is disabled on exported graphs).
    torch.nn.Module.train(converted, False)
    return litert_torch.convert(converted, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))


def _cast_weights_fp16(path: Path) -> None:
    """Rewrite the float .tflite at `path` with float16 weights (dequantized to float32 at load)."""
    aeq = import_optional("ai_edge_quantizer", what="FP16 tflite weights")
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    quantizer = aeq.Quantizer(str(path))
    quantizer.add_weight_only_config(
        regex=".*", operation_name=aeq.qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
        algorithm_key=AlgorithmName.FLOAT_CASTING,
    )
    result = quantizer.quantize()
    path.write_bytes(bytes(result.quantized_model))


def tflite_ops(path: str | Path) -> list[dict[str, Any]]:
    """The builtin ops of a .tflite in execution order, read without delegates:
    ``[{"index", "op", "input_dtypes", "output_dtypes", "max_rank", "macs"}]`` (``macs``: multiply-
    accumulates of convs / matmuls, one per output element for other ops; an estimate of cost)."""
    mod = import_optional("ai_edge_litert.interpreter", what="reading .tflite ops")
    interp = mod.Interpreter(
        model_path=str(path), experimental_op_resolver_type=mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    tensors = {t["index"]: t for t in interp.get_tensor_details()}

    def dtypes(indices: Any) -> list[str]:
        return [np.dtype(tensors[i]["dtype"]).name for i in indices if int(i) >= 0 and int(i) in tensors]

    def max_rank(indices: Any) -> int:
        return max((len(tensors[int(i)]["shape"]) for i in indices if int(i) in tensors), default=0)

    def macs(op: dict[str, Any]) -> int:
        out = [tensors[int(i)]["shape"] for i in op["outputs"] if int(i) in tensors]
        ins = [tensors[int(i)]["shape"] for i in op["inputs"] if int(i) >= 0 and int(i) in tensors]
        n_out = int(np.prod(out[0])) if out else 0
        name = op["op_name"]
        if name == "CONV_2D" and len(ins) > 1:
            return n_out * int(np.prod(ins[1][1:]))
        if name == "DEPTHWISE_CONV_2D" and len(ins) > 1:
            return n_out * int(np.prod(ins[1][1:3]))
        if name in ("FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV") and len(ins) > 1:
            k = int(ins[1][-1]) if name == "FULLY_CONNECTED" else int(ins[0][-1]) if name == "BATCH_MATMUL" else int(np.prod(ins[1][1:]))
            return n_out * k
        return n_out  # element-wise and data movement: one operation per output element

    return [
        {"index": op["index"], "op": op["op_name"], "input_dtypes": dtypes(op["inputs"]),
         "output_dtypes": dtypes(op["outputs"]), "max_rank": max_rank([*op["inputs"], *op["outputs"]]),
         "macs": macs(op)}
        for op in interp._get_ops_details()
    ]
