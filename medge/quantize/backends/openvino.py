"""OpenVINO backend: NNCF post-training INT8 quantization (or FP16 compression) to OpenVINO IR.

The ONNX model goes through the same ``quant_pre_process`` step as the ORT backend, so the node
names the gate ranks and excludes are shared.  Excluded ONNX nodes become an NNCF
``IgnoredScope`` over the OpenVINO ops created from them (``/conv1/Conv`` →
``/conv1/Conv/WithoutBiases`` + ``/conv1/Conv``).  Sensitivity is ranked on an ORT QDQ proxy
quantized from the same calibration data.

The default is NNCF's PERFORMANCE preset (symmetric int8 activations).  When the gate fails, the
recovery schemes come first: for graphs with attention (Softmax) or LayerNorm, NNCF's
``ModelType.TRANSFORMER`` (MIXED preset: asymmetric activations; SmoothQuant α = 0.95 on MatMul;
Softmax, LayerNorm/MVN and the attention's scaling and residual Add/Multiply left in float); for
the others the MIXED preset.  The matmuls/convolutions NNCF leaves in float are reported.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medge.common.errors import UsageError
from medge.quantize.backends.base import QuantBackend, QuantOptions
from medge.quantize.backends.ort import OrtBackend
from medge.common.registry import import_optional


_COMPUTE_OPS = frozenset({"MatMul", "Convolution", "GroupConvolution", "ConvolutionBackpropData"})
# ops between a quantizer (or an int8 weight's dequantization) and the op it feeds
_PASSTHROUGH = frozenset({"Reshape", "Transpose", "Convert", "Unsqueeze", "Squeeze", "Gather", "Concat", "StridedSlice",
                          "Split", "VariadicSplit", "Broadcast", "Subtract", "Multiply", "MaxPool", "AvgPool"})


def _ov_names(model, exclude_nodes: list[str]) -> list[str]:
    """OpenVINO op names created from the ONNX nodes `exclude_nodes`."""
    wanted = set(exclude_nodes)
    names = []
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        if name in wanted or any(name.startswith(n + "/") for n in wanted):
            names.append(name)
    return names


class OpenVinoBackend(QuantBackend):
    """`nncf.quantize` on the OpenVINO model read from ONNX; writes .xml + .bin."""

    name = "openvino"
    artifact_suffix = ".xml"
    runtime = "openvino"
    reference_options = {"precision": "f32"}
    precisions = ("int8", "fp16")

    def prepare(self, onnx_in: Path, workdir: Path) -> Path:
        return OrtBackend().prepare(onnx_in, workdir)

    def supports_fallback(self, options: QuantOptions) -> bool:
        return options.precision == "int8"

    def quantize(self, onnx_in: Path, out: Path, calib: Iterable[dict[str, np.ndarray]],
                 exclude_nodes: list[str], options: QuantOptions) -> None:
        ov = import_optional("openvino", what="the openvino quantization backend")
        model = ov.Core().read_model(str(onnx_in))
        if options.precision == "fp16":
            ov.save_model(model, str(out), compress_to_fp16=True)
            return
        if options.calib_method != "minmax":
            raise UsageError("the openvino backend calibrates with NNCF's own range estimators; "
                             "use --calib-method minmax (or --backend ort for entropy/percentile)")
        nncf = import_optional("nncf", what="the openvino quantization backend")
        data = list(calib)
        if not data:
            raise UsageError("INT8 quantization needs calibration samples; pass --calib SOURCE")
        ignored = _ov_names(model, exclude_nodes)
        scope = nncf.IgnoredScope(names=ignored, validate=False) if ignored else None
        scheme: dict = {"preset": nncf.QuantizationPreset.PERFORMANCE}
        if options.extra.get("model_type") == "transformer":
            scheme = {"preset": nncf.QuantizationPreset.MIXED, "model_type": nncf.ModelType.TRANSFORMER}
        elif options.extra.get("preset") == "mixed":
            scheme = {"preset": nncf.QuantizationPreset.MIXED}
        nncf.set_log_level(logging.WARNING)
        with contextlib.redirect_stdout(sys.stderr):  # NNCF progress bars must not mix with --json
            quantized = nncf.quantize(model, nncf.Dataset(data), subset_size=len(data), ignored_scope=scope, **scheme)
        ov.save_model(quantized, str(out), compress_to_fp16=False)

    def recovery_schemes(self, model, options: QuantOptions) -> list[tuple[str, dict]]:
        """NNCF's transformer mode for graphs with attention or LayerNorm, then the MIXED preset."""
        if options.precision != "int8":
            return []
        ops = {n.op_type for n in model.graph.node}
        mixed = ("mixed", {"preset": "mixed"})
        if ops & {"Softmax", "LayerNormalization"}:
            return [("transformer", {"model_type": "transformer"}), mixed]
        return [mixed]

    def float_compute_ops(self, artifact: Path) -> list[str]:
        """MatMul/Convolution ops of the IR with an input neither fed by a FakeQuantize (activations)
        nor by an int8 constant (weights: int8 Constant → Convert → Subtract → Multiply)."""
        ov = import_optional("openvino", what="the openvino quantization backend")
        model = ov.Core().read_model(str(artifact))
        integer = {ov.Type.i8, ov.Type.u8, ov.Type.i4, ov.Type.u4}

        def quantized(output) -> bool:
            node = output.get_node()
            while node.get_type_name() in _PASSTHROUGH and node.get_input_size():
                node = node.input_value(0).get_node()
            if node.get_type_name() == "Constant":
                return node.get_element_type() in integer
            return node.get_type_name() == "FakeQuantize"

        return [op.get_friendly_name() for op in model.get_ordered_ops()
                if op.get_type_name() in _COMPUTE_OPS and not all(quantized(op.input_value(i)) for i in range(2))]

    def sensitivity_proxy(self, prepared: Path, first_artifact: Path, workdir: Path,
                          calib: list[dict[str, np.ndarray]], options: QuantOptions) -> Path:
        proxy = workdir / "ort_proxy.onnx"
        OrtBackend().quantize(prepared, proxy, calib, [], QuantOptions(precision="int8"))
        return proxy

    def artifact_files(self, out: Path) -> list[Path]:
        return [out, out.with_suffix(".bin")]

    def finalize(self, artifact: Path, metadata: dict[str, str]) -> None:
        """Store medge metadata in the IR's ``rt_info`` under ``medge``."""
        ov = import_optional("openvino", what="the openvino quantization backend")
        model = ov.Core().read_model(str(artifact))
        for key, value in sorted(metadata.items()):
            model.set_rt_info(value, ["medge", key.removeprefix("medge.")])
        tmp = artifact.with_name(artifact.stem + ".meta.xml")
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        tmp.replace(artifact)
        tmp.with_suffix(".bin").replace(artifact.with_suffix(".bin"))
