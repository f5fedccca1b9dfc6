"""`medge compile MODEL.onnx --target T -o BUNDLE`: a verified bundle for one device."""

from __future__ import annotations

import argparse
import json
from typing import Any

from medge.commands.common_args import PRECISION_HELP, non_negative_float, parse_model_kwargs
from medge.common.errors import UsageError

HELP = "compile an exported ONNX model into a bundle for a target device"
EXAMPLE = ["medge compile cxr.onnx -t jetson-orin-nano -o build/cxr-jetson",
           "medge compile cxr.onnx -t intel-npu --calib xrays/ --eval xrays-eval/ --max-drop 0.005 -o build/cxr-npu"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("model", help="FP32 ONNX model with medge metadata (from 'medge export')")
    parser.add_argument("--target", "-t", required=True, help="target device (see 'medge devices list')")
    parser.add_argument("-o", "--output", required=True, help="bundle folder to write")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), help=PRECISION_HELP)
    parser.add_argument("--calib", metavar="SOURCE", help="calibration data for int8: folder, DICOM, WFDB, .npz or "
                        "synthetic:<task> (required for models not in the zoo; zoo models fall back to their "
                        "synthetic data with a WARNING)")
    parser.add_argument("--eval", metavar="SOURCE", help="evaluation data for the accuracy gate")
    parser.add_argument("--max-drop", type=non_negative_float, metavar="X",
                        help="largest allowed metric drop, 0 or more (needs --eval; default: no metric gate)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="override a compile option of the target (repeatable; values are JSON or strings)")
    add_tolerance_arguments(parser)
    parser.add_argument("--model-ref", help="zoo name or module:factory of the PyTorch source (used by some recipes; "
                                            "default: the source recorded in the ONNX metadata at export)")
    parser.add_argument("--model-kwargs", metavar="JSON", help="JSON object of --model-ref factory keyword arguments")
    parser.add_argument("--weights", metavar="PATH", help="safetensors or state-dict checkpoint for --model-ref")
    parser.add_argument("--build-engine", action="store_true",
                        help="also build the device artifact here (TensorRT: needs the tensorrt package and a GPU)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing bundle at -o made for another target or holding files built on the device")


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _cosine(text: str) -> float:
    value = _tolerance(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"a cosine similarity is at most 1, got {text}")
    return value


def add_tolerance_arguments(parser: argparse.ArgumentParser) -> None:
    """``--min-cosine``, ``--max-channel-error``, ``--atol``, ``--rtol``: the INT8 parity tolerances
    (quantize, compile, build); looser than the defaults is allowed, with a WARNING."""
    from medge.quantize.parity_gate import INT8_MAX_CHANNEL_ERROR, INT8_MIN_COSINE

    group = parser.add_argument_group("INT8 parity tolerances (without --eval/--max-drop)")
    group.add_argument("--min-cosine", type=_cosine, metavar="C",
                       help=f"lowest cosine similarity of each sample's output with FP32 (default {INT8_MIN_COSINE})")
    group.add_argument("--max-channel-error", type=_tolerance, metavar="F",
                       help="largest RMS error of an output channel as a fraction of its RMS "
                            f"(default {INT8_MAX_CHANNEL_ERROR}; 1.0 lets an untrained model through)")
    group.add_argument("--atol", type=_tolerance, metavar="A",
                       help="element-wise: |INT8 - FP32| <= atol + rtol·|FP32| (replaces the statistical checks)")
    group.add_argument("--rtol", type=_tolerance, metavar="R", help="relative part of --atol's rule")


def tolerances_from_args(args: argparse.Namespace) -> dict[str, float | None]:
    """The parity tolerances given on the command line (None: the default)."""
    return {k: getattr(args, k) for k in ("min_cosine", "max_channel_error", "atol", "rtol")}


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` → dict; values parse as JSON (numbers, true/false/null) or stay strings."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--option expects KEY=VALUE, got '{pair}'")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def run(args: argparse.Namespace):
    """Run the command."""
    from pathlib import Path

    from medge.devices.compile import CompileConfig, compile_model

    config = CompileConfig(
        model=Path(args.model), target=args.target, output=Path(args.output), precision=args.precision,
        calib_source=args.calib, eval_source=args.eval, max_drop=args.max_drop, options=parse_options(args.option),
        model_ref=args.model_ref, model_kwargs=parse_model_kwargs(args.model_kwargs) or None, weights=args.weights,
        build_engine=args.build_engine, force=args.force, progress=True, tolerances=tolerances_from_args(args),
    )
    return compile_model(config)
