"""ONNX Runtime backend: static QDQ INT8, dynamic INT8 and FP16 ONNX.

Static INT8 defaults: QDQ format, uint8 activations, int8 symmetric per-channel weights, after
``quant_pre_process`` (shape inference + basic graph optimisation).  The gate may widen chosen
activation tensors to uint16 (``QuantOptions.int16_tensors``, "w8a16"): the weights stay int8.

``trt_compatible=True`` (used by the Jetson compile recipe) writes an explicit-quantization ONNX
that TensorRT 10 builds without an implicit calibrator: int8 activations with symmetric ranges
(zero point 0, ``ActivationSymmetric``), int8 symmetric per-channel weights in [-127, 127]
(``WeightSymmetric``), no uint8 anywhere, and opset >= 13 (per-channel ``DequantizeLinear`` axis).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medge.common.errors import MedgeError
from medge.quantize.backends.base import QuantBackend, QuantOptions
from medge.quantize.backends.onnx_compact import compact_qdq_model
from medge.export.onnx_stats import symbolic_shapes

log = logging.getLogger(__name__)

MIN_OPSET = 13
INT16_OPSET = 21  # standard 16-bit QuantizeLinear/DequantizeLinear (older opsets need com.microsoft ops)


class _Reader:
    """ORT `CalibrationDataReader` over any iterable of feeds dicts."""

    def __init__(self, data: Iterable[dict[str, np.ndarray]]) -> None:
        self._data = list(data)
        self._it = iter(self._data)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._data)


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _at_least_opset(onnx_in: Path, opset: int, converted: Path) -> Path:
    """`onnx_in`, or a copy converted to `opset` at `converted` when its opset is lower."""
    import onnx

    model = onnx.load(str(onnx_in))
    if _opset(model) >= opset:
        return onnx_in
    onnx.save(onnx.version_converter.convert_version(model, opset), str(converted))
    return converted


def _name_nodes(model) -> None:
    """Give every unnamed node a stable name so it can be excluded from quantization."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


class OrtBackend(QuantBackend):
    """`onnxruntime.quantization`: QDQ static, dynamic and FP16 conversion."""

    name = "ort"
    artifact_suffix = ".onnx"
    runtime = "onnxruntime"
    precisions = ("int8", "fp16", "int8-dynamic")

    def prepare(self, onnx_in: Path, workdir: Path) -> Path:
        import onnx
        from onnxruntime.quantization import quant_pre_process

        model = onnx.load(str(onnx_in))
        if _opset(model) < MIN_OPSET:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        _name_nodes(model)
        out = workdir / "prepared.onnx"
        # a path, not the ModelProto: ORT's optimiser moves a ModelProto's weights out to external
        # initializers in place ("foo.bin"), which breaks any retry on the same proto
        source = workdir / "pre_input.onnx"
        onnx.save(model, str(source))
        attempts = ({"skip_symbolic_shape": True}, {"skip_symbolic_shape": True, "skip_optimization": True})
        # quant_pre_process's own symbolic inference saves sym_shape_infer_temp.onnx (+ weights) into
        # the working directory when it fails: check it first, with quant_pre_process's settings
        if symbolic_shapes(model, auto_merge=False) is not None:
            attempts = ({"skip_symbolic_shape": False}, *attempts)
        for i, kwargs in enumerate(attempts):
            try:
                quant_pre_process(str(source), str(out), **kwargs)
                break
            except Exception as exc:  # noqa: BLE001 - retried with fewer steps, the last error raised
                if i == len(attempts) - 1:
                    raise
                log.debug("quant_pre_process(%s) failed (%s); retrying with fewer steps", kwargs, exc)
        prepared = onnx.load(str(out))
        _name_nodes(prepared)
        onnx.save(prepared, str(out))
        return out

    def quantize(self, onnx_in: Path, out: Path, calib: Iterable[dict[str, np.ndarray]],
                 exclude_nodes: list[str], options: QuantOptions) -> None:
        if options.precision == "fp16":
            self._fp16(onnx_in, out, exclude_nodes, options)
        elif options.precision == "int8-dynamic":
            self._dynamic(onnx_in, out, exclude_nodes)
        elif options.precision == "int8":
            self._static(onnx_in, out, calib, exclude_nodes, options)
        else:
            raise MedgeError(f"ort backend: unknown precision '{options.precision}'; choices: {', '.join(self.precisions)}")

    def _static(self, onnx_in: Path, out: Path, calib: Iterable[dict[str, np.ndarray]],
                exclude_nodes: list[str], options: QuantOptions) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}
        extra = {"WeightSymmetric": True}
        activation_type = QuantType.QUInt8
        if options.trt_compatible:
            # TensorRT dequantizes int8 only and wants float biases: no int32 bias Q/DQ.
            extra.update(ActivationSymmetric=True, QuantizeBias=False)
            activation_type = QuantType.QInt8
        if options.int16_tensors:
            extra["TensorQuantOverrides"] = {t: [{"quant_type": QuantType.QUInt16}] for t in options.int16_tensors}
            onnx_in = _at_least_opset(onnx_in, INT16_OPSET, out.with_name(out.stem + f".opset{INT16_OPSET}.onnx"))
        if options.calib_method == "percentile":
            extra["CalibPercentile"] = float(options.extra.get("percentile", 99.999))
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        # ORT's default op list, minus BatchNormalization: an unfolded BN (e.g. DenseNet's
        # pre-activation BN after a Concat) gains nothing from INT8 and its rank-1 weights
        # cannot take per-channel scales.
        op_types = sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - {"BatchNormalization"})
        reader = _Reader(calib)
        if not reader._data:
            raise MedgeError("static INT8 quantization needs calibration samples; pass --calib SOURCE")
        try:
            quantize_static(
                str(onnx_in), str(out), reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=op_types,
                per_channel=True,
                activation_type=activation_type,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude_nodes),
                calibrate_method=methods[options.calib_method],
                extra_options=extra,
                # 7-bit weights: u8s8 kernels without VNNI cannot saturate (medge.devices.int8_numerics)
                reduce_range=bool(options.extra.get("reduce_range")),
            )
        except ValueError as exc:
            # ORT's histogram calibrators call np.histogram on every activation; a tensor that holds
            # ±inf (a causal or attention mask: xLSTM, Mamba) has no finite range to bin
            if options.calib_method == "minmax" or "not finite" not in str(exc):
                raise
            raise MedgeError(
                f"--calib-method {options.calib_method} cannot build histograms of this model: an activation holds "
                "±inf or NaN (typically a causal or attention mask); use --calib-method minmax") from exc

    def supports_int16_activations(self, options: QuantOptions) -> bool:
        """16-bit activations for static QDQ, except for TensorRT (no INT16 Q/DQ there)."""
        return options.precision == "int8" and not options.trt_compatible

    def _dynamic(self, onnx_in: Path, out: Path, exclude_nodes: list[str]) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # ConvInteger on CPU takes uint8 weights only; int8 weights work for MatMul/Gemm.
        quantize_dynamic(str(onnx_in), str(out), weight_type=QuantType.QUInt8,
                         nodes_to_exclude=list(exclude_nodes))

    def _fp16(self, onnx_in: Path, out: Path, exclude_nodes: list[str], options: QuantOptions) -> None:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = onnx.load(str(onnx_in))
        converted = convert_float_to_float16(model, keep_io_types=options.keep_io_fp32,
                                             node_block_list=list(exclude_nodes) or None)
        onnx.save(converted, str(out))

    def finalize(self, artifact: Path, metadata: dict[str, str]) -> None:
        import onnx

        model = onnx.load(str(artifact))
        keep = [p for p in model.metadata_props if p.key not in metadata]
        del model.metadata_props[:]
        model.metadata_props.extend(keep)
        for key, value in sorted(metadata.items()):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        if any(n.op_type == "QuantizeLinear" for n in model.graph.node):
            compact_qdq_model(model)
        onnx.save(model, str(artifact))
