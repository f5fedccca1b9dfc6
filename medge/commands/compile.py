"""`medge compile MODEL.onnx --target T -o BUNDLE`: a verified bundle for one device."""

from __future__ import annotations

import argparse
import json
from typing import Any

from medge.commands.common_args import PRECISION_HELP, non_negative_float, parse_model_kwargs
from medge.errors import UsageError

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
    parser.add_argument("--model-ref", help="zoo name or module:factory of the PyTorch source (used by some recipes; "
                                            "default: the source recorded in the ONNX metadata at export)")
    parser.add_argument("--model-kwargs", metavar="JSON", help="JSON object of --model-ref factory keyword arguments")
    parser.add_argument("--weights", metavar="PATH", help="safetensors or state-dict checkpoint for --model-ref")
    parser.add_argument("--build-engine", action="store_true",
                        help="also build the device artifact here (TensorRT: needs the tensorrt package and a GPU)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing bundle at -o made for another target or holding files built on the device")


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
        build_engine=args.build_engine, force=args.force, progress=True,
    )
    return compile_model(config)
