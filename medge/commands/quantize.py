"""`medge quantize`: INT8/FP16 quantization with a clinical accuracy gate and FP32 fallback."""

from __future__ import annotations

import argparse

from medge.commands.common_args import non_negative_float, positive_int

HELP = "quantize an ONNX model to INT8/FP16, gated on a clinical metric with FP32 fallback"
EXAMPLE = "medge quantize cxr.onnx -o cxr.int8.onnx --calib synthetic:cxr --eval synthetic:cxr --max-drop 0.005"

_PRECISIONS = ("int8", "fp16", "int8-dynamic")
_BACKENDS = ("ort", "openvino", "inc")
_CALIB_METHODS = ("minmax", "entropy", "percentile")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("model", help="FP32 .onnx model (from medge export)")
    parser.add_argument("-o", "--output", required=True,
                        help="output artifact: .onnx (ort, inc) or .xml + .bin (openvino)")
    parser.add_argument("--precision", choices=_PRECISIONS, default="int8",
                        help="int8: static, calibrated; fp16: half-precision weights/activations; int8-dynamic: "
                             "weights only, no calibration (default int8)")
    parser.add_argument("--backend", choices=_BACKENDS, default="ort",
                        help="ort: ONNX Runtime quantizer (.onnx); openvino: NNCF (.xml); inc: Intel Neural "
                             "Compressor (.onnx) (default ort)")
    parser.add_argument("--calib", metavar="SOURCE",
                        help="calibration data: folder, DICOM, WFDB, .npy/.npz or synthetic:<task>")
    parser.add_argument("--calib-size", type=positive_int, default=300, metavar="N",
                        help="calibration samples drawn from --calib (default 300)")
    parser.add_argument("--calib-method", choices=_CALIB_METHODS, default="minmax",
                        help="how activation ranges are set: minmax, entropy (KL) or percentile (default minmax)")
    parser.add_argument("--eval", metavar="SOURCE", help="evaluation data with targets, for the accuracy gate")
    parser.add_argument("--eval-size", type=positive_int, default=300, metavar="N",
                        help="evaluation samples drawn from --eval for the gate (default 300)")
    parser.add_argument("--metric", help="auroc | sens@spec[:0.9] | dice | iou | pearson | rmse_uv | mae_uv | "
                                         "accuracy (default: from the model's task)")
    parser.add_argument("--max-drop", type=non_negative_float, metavar="X",
                        help="largest accepted metric drop (reference - quantized), 0 or more; needs --eval "
                             "(default: no gate, the metric is only reported)")
    parser.add_argument("--max-fallback-steps", type=int, default=6, metavar="N",
                        help="attempts per fallback stage (1, 2, 4 … sensitive activations to 16 bits, then "
                             "nodes to FP32) before giving up; 0 disables")
    parser.add_argument("--no-int16-fallback", dest="int16_fallback", action="store_false",
                        help="recover a failed gate with FP32 nodes only (no 16-bit activations)")
    parser.add_argument("--allow-overlap", action="store_true",
                        help="accept calibration samples that also appear in the evaluation set")
    io = parser.add_mutually_exclusive_group()
    io.add_argument("--keep-io-fp32", dest="keep_io_fp32", action="store_true", default=True,
                    help="FP16: keep model inputs/outputs FP32 (default)")
    io.add_argument("--fp16-io", dest="keep_io_fp32", action="store_false", help="FP16: FP16 inputs/outputs")
    parser.add_argument("--trt", action="store_true",
                        help="ORT INT8: TensorRT-ready explicit Q/DQ (symmetric int8 activations and weights)")
    parser.add_argument("--quantize-output-head", dest="keep_output_head_fp32", action="store_false",
                        help="INT8: also quantize the output head (by default the nodes from the outputs back "
                             "to the last conv/matmul stay FP32)")
    parser.add_argument("--bootstrap", type=positive_int, default=1000, metavar="N",
                        help="bootstrap resamples for the 95%% confidence interval of the drop (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling the data and the bootstrap (default 0)")
    from medge.commands.compile import add_tolerance_arguments

    add_tolerance_arguments(parser)  # given without --max-drop: every INT8 rung is judged by parity with FP32


def run(args: argparse.Namespace):
    """Run the command."""
    from pathlib import Path

    from medge.common.fileio import check_output_file

    check_output_file(args.output, "-o", suffix=".onnx")  # before any work
    from medge.commands.compile import tolerances_from_args
    from medge.quantize.parity_gate import int8_limits
    from medge.quantize import QuantizeConfig, quantize_model

    tolerances = tolerances_from_args(args)
    limits, warnings = int8_limits(tolerances)
    judged = any(v is not None for v in tolerances.values()) and args.precision == "int8"
    config = QuantizeConfig(
        model=Path(args.model), output=Path(args.output), precision=args.precision, backend=args.backend,
        calib_source=args.calib, calib_size=args.calib_size, calib_method=args.calib_method,
        eval_source=args.eval, eval_size=args.eval_size, metric=args.metric, max_drop=args.max_drop,
        allow_overlap=args.allow_overlap, keep_io_fp32=args.keep_io_fp32, trt_compatible=args.trt,
        keep_output_head_fp32=args.keep_output_head_fp32,
        max_fallback_steps=args.max_fallback_steps, int16_fallback=args.int16_fallback, n_boot=args.bootstrap, seed=args.seed,
        parity_limits=limits if judged else None,
    )
    from medge.common.console import warn

    for line in warnings if judged else []:
        warn(line)
    report = quantize_model(config)
    report.warnings[:0] = warnings if judged else []
    return report
