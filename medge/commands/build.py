"""`medge build MODEL --target T -o BUNDLE`: export → quantize with gate → compile → compare → profile."""

from __future__ import annotations

import argparse
from pathlib import Path

from medge.commands.common_args import (PRECISION_HELP, add_declaration_arguments, declaration_from_args,
                                        non_negative_float, parse_model_kwargs)
from medge.common.errors import UsageError


HELP = "the whole chain for one model and target: export, quantize with gate, compile, compare, profile"
EXAMPLE = ["medge build cxr-densenet-tiny --target intel-cpu -o build/cxr-intel",
           "medge build cxr-densenet-tiny --target intel-npu --calib xrays/ --eval xrays-eval/"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    from medge.build.chain import DEFAULT_MODEL, DEFAULT_TARGET

    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                        help=f"zoo name, package.module:factory or .pt2/.pt file (default {DEFAULT_MODEL})")
    parser.add_argument("--target", default=DEFAULT_TARGET, help=f"device profile (default {DEFAULT_TARGET}; see 'medge devices list')")
    parser.add_argument("-o", "--output", help="bundle folder (default build/<model>-<target>)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                        help=PRECISION_HELP + "; with --prune, int8 where the target accelerates it")
    parser.add_argument("--calib", help="calibration data (folder, DICOM, WFDB, .npz, synthetic[:task]); default: the zoo "
                        "model's synthetic data, with a WARNING (required for models not in the zoo when int8)")
    parser.add_argument("--eval", help="evaluation data for the accuracy gate; default: the zoo model's synthetic data "
                        "(eval split), with a WARNING; models not in the zoo get no gate without it")
    parser.add_argument("--max-drop", type=non_negative_float,
                        help="largest allowed drop of the task metric, 0 or more (default: 0.005 AUROC/Pearson, 0.01 Dice)")
    parser.add_argument("--weights", help="weights (.safetensors or state-dict checkpoint)")
    parser.add_argument("--model-kwargs", help="JSON keyword arguments for a module:factory model")
    parser.add_argument("--input-shape", action="append",
                        help="input shape such as 1x1x224x224 (non-zoo models); repeat NAME=SHAPE[:DTYPE] for several inputs")
    parser.add_argument("--device", default="local", help="where to profile: 'local' (default) or ssh://user@host[:port]")
    parser.add_argument("--runs", type=int, default=50, help="timed profiling runs (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up runs (default 10)")
    parser.add_argument("--threads", type=int, help="inference threads (default: runtime's choice)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="compile option override (repeatable)")
    from medge.commands.compile import add_tolerance_arguments

    add_tolerance_arguments(parser)
    parser.add_argument("--force", action="store_true",
                        help="replace an existing bundle at -o made for another target or holding files built on the device")
    add_declaration_arguments(parser)
    parser.add_argument("--prune", metavar="auto|S",
                        help="prune → distil from the dense model → gate before export: 'auto' (largest sparsity "
                             "within the budget) or a sparsity such as 0.3")
    parser.add_argument("--prune-data", metavar="SOURCE",
                        help="distillation data for --prune (default: the model's synthetic data; a folder is augmented)")
    parser.add_argument("--round-to", type=int, metavar="N",
                        help="--prune: keep channel counts multiples of N (default: the target's channel_multiple, see 'medge devices show'; e.g. 16 on intel-cpu)")
    parser.add_argument("--distill-steps", type=int, help="--prune: distillation steps per probe (default 600)")
    parser.add_argument("--prune-time-budget", type=float, metavar="SECONDS",
                        help="--prune auto: time budget of the search (default 1300, raised to fit every probe)")
    parser.add_argument("--min-sparsity", type=float,
                        help="--prune auto: lowest sparsity tried (default 0.5, halved down to 0.25 when 0.5 fails)")
    parser.add_argument("--max-sparsity", type=float, help="--prune auto: highest sparsity tried (default 0.7)")
    parser.add_argument("--distill-task-weight", type=float, metavar="W",
                        help="--prune: weight of the label loss when the distillation data have labels (default 1.0; "
                             "1 trains on the labels alone, e.g. when they are better than a weak dense model)")


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.build.chain import BuildConfig, build
    from medge.export.input_specs import parse_input_shapes

    kwargs = parse_model_kwargs(args.model_kwargs) or None
    from medge.commands.compile import parse_options, tolerances_from_args

    options = parse_options(args.option)
    from medge.build.prune_step import parse_prune

    parse_prune(args.prune)  # fail before any work
    prune_options = {k: v for k, v in (("distill_steps", args.distill_steps), ("time_budget", args.prune_time_budget),
                                       ("task_weight", args.distill_task_weight),
                                       ("min_sparsity", args.min_sparsity), ("max_sparsity", args.max_sparsity))
                     if v is not None}
    if args.round_to is not None and args.round_to < 1:
        raise UsageError(f"--round-to must be >= 1 (got {args.round_to})")
    if (args.prune_data or args.round_to or prune_options) and args.prune is None:
        raise UsageError("--prune-data, --round-to, --distill-steps, --distill-task-weight, --prune-time-budget, "
                         "--min-sparsity and --max-sparsity need --prune auto|S")
    name = args.model.rpartition(":")[2] if ":" in args.model else Path(args.model).stem  # pkg.mod:factory → factory
    output = args.output or f"build/{name}-{args.target}"
    return build(BuildConfig(
        model=args.model, target=args.target, output=Path(output), precision=args.precision, calib=args.calib,
        eval=args.eval, max_drop=args.max_drop, weights=args.weights, model_kwargs=kwargs,
        input_shape=parse_input_shapes(args.input_shape), device=args.device,
        runs=args.runs, warmup=args.warmup, threads=args.threads, options=options, force=args.force,
        declaration=declaration_from_args(args),
        prune=args.prune, prune_data=args.prune_data, round_to=args.round_to, prune_options=prune_options,
        tolerances=tolerances_from_args(args),
    ))
