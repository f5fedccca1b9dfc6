"""Intel Neural Compressor backend: PT2E static INT8 on the PyTorch model, exported to QDQ ONNX.

Optional extra ``medge[inc]`` (``neural-compressor-pt``).  The PyTorch model is rebuilt from the
ONNX metadata's ``model`` (a zoo name or ``package.module:factory``) with
`medge.export.load_model`; when the ONNX records the source weights' sha256, the rebuilt model
must match it.  INC quantizes the ``torch.export`` graph (uint8 asymmetric activations, int8
symmetric per-channel weights; int8 symmetric activations with ``trt_compatible``), then the
quantized program is exported with the dynamo ONNX exporter and its weight ``QuantizeLinear``
(+ ``Clip``) chains are folded into int8 initializers.

FP32 fallback of single nodes is not offered: INC's PT2E quantizer does not take the ONNX node
names the gate ranks, so a failing gate fails (use ``--backend ort`` or ``openvino`` then).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medge.common.errors import MedgeError, ModelLoadError, UsageError
from medge.quantize.backends.base import QuantBackend, QuantOptions
from medge.common.registry import import_optional
from medge.calibration import onnx_input
from medge.common.metadata import read_metadata
from medge.export import load_model
from medge.quantize.backends.ort import OrtBackend

log = logging.getLogger(__name__)


def _fold_constant_quantize(model) -> int:
    """Replace QuantizeLinear (and a following Clip) on initializers by int8 initializers."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
    folded, remove = 0, []
    for node in list(model.graph.node):
        if node.op_type != "QuantizeLinear" or not all(t in inits for t in node.input if t):
            continue
        w = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        zp = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else np.uint8(0)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * w.ndim
            shape[axis] = -1
            scale_b, zp_b = scale.reshape(shape), zp.astype(np.float64).reshape(shape)
        else:
            scale_b, zp_b = scale, zp.astype(np.float64)
        info = np.iinfo(zp.dtype)
        q = np.clip(np.rint(w / scale_b) + zp_b, info.min, info.max)
        out_name, chain = node.output[0], [node]
        users = consumers.get(out_name, [])
        if len(users) == 1 and users[0].op_type == "Clip" and all(t in inits for t in users[0].input[1:] if t):
            clip = users[0]
            lo = numpy_helper.to_array(inits[clip.input[1]]) if len(clip.input) > 1 and clip.input[1] else info.min
            hi = numpy_helper.to_array(inits[clip.input[2]]) if len(clip.input) > 2 and clip.input[2] else info.max
            q = np.clip(q, lo, hi)
            out_name, chain = clip.output[0], [node, clip]
        model.graph.initializer.append(numpy_helper.from_array(q.astype(zp.dtype), out_name))
        remove += chain
        folded += 1
    for node in remove:
        model.graph.node.remove(node)
    used = {t for n in model.graph.node for t in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return folded


class IncBackend(QuantBackend):
    """neural-compressor-pt PT2E static quantization of the source PyTorch model."""

    name = "inc"
    artifact_suffix = ".onnx"
    runtime = "onnxruntime"
    precisions = ("int8",)

    def supports_fallback(self, options: QuantOptions) -> bool:
        return False

    def _torch_model(self, onnx_in: Path):
        meta = read_metadata(onnx_in)
        if meta is None or not meta.model:
            raise MedgeError(f"{onnx_in.name} has no medge metadata naming its PyTorch model; the inc backend "
                             "quantizes the PyTorch model: export with medge export, or use --backend ort")
        _, shape = onnx_input(onnx_in, meta)
        loaded = load_model(meta.model, input_shape=shape)
        if meta.source_sha256 and loaded.sha256 and meta.source_sha256 != loaded.sha256:
            raise ModelLoadError(f"the PyTorch model '{meta.model}' rebuilt for inc does not have the weights "
                                 f"{onnx_in.name} was exported from (sha256 differs); use --backend ort")
        return loaded.module, shape

    def quantize(self, onnx_in: Path, out: Path, calib: Iterable[dict[str, np.ndarray]],
                 exclude_nodes: list[str], options: QuantOptions) -> None:
        import_optional("neural_compressor", what="the inc quantization backend")
        import onnx
        import torch
        from neural_compressor.torch.export import export
        from neural_compressor.torch.quantization import StaticQuantConfig, convert, prepare

        if options.calib_method != "minmax":
            raise UsageError("the inc backend calibrates with min/max; use --calib-method minmax")
        data = list(calib)
        if not data:
            raise UsageError("INT8 quantization needs calibration samples; pass --calib SOURCE")
        module, shape = self._torch_model(onnx_in)
        example = (torch.from_numpy(next(iter(data[0].values()))),)
        act = {"act_dtype": "int8", "act_sym": True} if options.trt_compatible else {}
        logging.getLogger("neural_compressor").setLevel(logging.ERROR)
        with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
            program = export(module, example_inputs=example)
            prepared = prepare(program, quant_config=StaticQuantConfig(**act))
            for feeds in data:
                prepared(torch.from_numpy(next(iter(feeds.values()))))
            quantized = convert(prepared)
            torch.onnx.export(quantized, example, str(out), dynamo=True, external_data=False,
                              input_names=[next(iter(data[0]))], verbose=False)
        model = onnx.load(str(out))
        log.debug("inc: folded %d weight quantizers", _fold_constant_quantize(model))
        onnx.save(model, str(out))

    def finalize(self, artifact: Path, metadata: dict[str, str]) -> None:
        OrtBackend().finalize(artifact, metadata)
