"""`medge build MODEL --target T -o BUNDLE`: export → quantize with gate → compile → compare → profile."""

from __future__ import annotations

import argparse
from pathlib import Path


HELP = "the whole chain for one model and target: export, quantize with gate, compile, compare, profile"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    from medge.build import DEFAULT_MODEL, DEFAULT_TARGET

    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                        help=f"zoo name, package.module:factory or .pt2/.pt file (default {DEFAULT_MODEL})")
    parser.add_argument("--target", default=DEFAULT_TARGET, help=f"device profile (default {DEFAULT_TARGET}; see 'medge devices list')")
    parser.add_argument("-o", "--output", help="bundle folder (default build/<model>-<target>)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="default: the target's default precision")
    parser.add_argument("--calib", help="calibration data (folder, DICOM, WFDB, .npz, synthetic[:task]); default: the zoo model's synthetic data")
    parser.add_argument("--eval", help="evaluation data for the accuracy gate; default: the zoo model's synthetic data (eval split)")
    parser.add_argument("--max-drop", type=float, help="largest allowed drop of the task metric (default: 0.005 AUROC/Pearson, 0.01 Dice)")
    parser.add_argument("--weights", help="weights (.safetensors or state-dict checkpoint)")
    parser.add_argument("--model-kwargs", help="JSON keyword arguments for a module:factory model")
    parser.add_argument("--input-shape", action="append",
                        help="input shape such as 1x1x224x224 (non-zoo models); repeat NAME=SHAPE[:DTYPE] for several inputs")
    parser.add_argument("--device", default="local", help="where to profile: 'local' (default) or ssh://user@host[:port]")
    parser.add_argument("--runs", type=int, default=50, help="timed profiling runs (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up runs (default 10)")
    parser.add_argument("--threads", type=int, help="inference threads (default: runtime's choice)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="compile option override (repeatable)")
    from medge.export.declare import add_declaration_arguments

    add_declaration_arguments(parser)


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.build import BuildConfig, build
    from medge.export.loading import parse_input_shapes

    from medge.commands.common_args import parse_model_kwargs
    from medge.export.declare import Declaration

    kwargs = parse_model_kwargs(args.model_kwargs) or None
    from medge.commands.compile import parse_options

    options = parse_options(args.option)
    output = args.output or f"build/{Path(args.model).stem.replace(':', '-')}-{args.target}"
    return build(BuildConfig(
        model=args.model, target=args.target, output=Path(output), precision=args.precision, calib=args.calib,
        eval=args.eval, max_drop=args.max_drop, weights=args.weights, model_kwargs=kwargs,
        input_shape=parse_input_shapes(args.input_shape), device=args.device,
        runs=args.runs, warmup=args.warmup, threads=args.threads, options=options,
        declaration=Declaration.from_args(args),
    ))
