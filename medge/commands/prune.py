"""`medge prune`: structured (channel) or unstructured (magnitude) pruning, recovered by distillation."""

from __future__ import annotations

import argparse

from medge.commands.common_args import parse_model_kwargs
from medge.common.errors import UsageError

HELP = ("prune a PyTorch model, distil it from the dense model and gate its clinical metric; "
        "saves a .pt2 for 'medge export'")

EXAMPLE = "medge prune cxr-densenet-tiny --sparsity 0.3 --round-to 8 -o cxr-pruned.pt2"


def parse_sparsity(text: str) -> float | None:
    """``auto`` → None (search), else a float."""
    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--sparsity must be a number such as 0.3 or 'auto' (got '{text}')") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("model", help="zoo name or package.module:factory (with --weights)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.pt2",
                        help="ExportedProgram to write (plus OUT.pt2.medge.json metadata); pass it to 'medge export'")
    parser.add_argument("--sparsity", default="0.5", metavar="S|auto",
                        help="fraction of channels (structured) or weights (unstructured) to remove, or 'auto': "
                             "the largest that passes the gate (default 0.5)")
    parser.add_argument("--mode", choices=("structured", "unstructured"), default="structured",
                        help="structured removes channels (smaller, faster); unstructured zeroes weights (default structured)")
    parser.add_argument("--weights", metavar="PATH", help="safetensors or state-dict checkpoint to load")
    parser.add_argument("--model-kwargs", metavar="JSON", help="JSON object of factory keyword arguments")
    parser.add_argument("--input-shape", metavar="NxCx...", help="input shape, e.g. 1x1x256x256 (required for non-zoo models)")
    parser.add_argument("--task", help="task stored in the metadata of a non-zoo model (e.g. multilabel-classification)")
    parser.add_argument("--labels", help="comma-separated output labels of a non-zoo model")
    parser.add_argument("--round-to", type=int, metavar="N", help="keep channel counts multiples of N (e.g. 16 for SIMD/NPUs); a layer too narrow "
                             "to prune to a multiple of N is pruned to a multiple of N/2")
    parser.add_argument("--finetune", metavar="SOURCE",
                        help="distil the pruned model from the dense one on this data (synthetic:<task> is unlimited; "
                             "a folder of images, labelled or not, is augmented)")
    parser.add_argument("--distill-steps", type=int, default=600, help="optimizer steps of distillation (default 600)")
    parser.add_argument("--prune-steps", type=int, default=1,
                        help="reach the sparsity in N equal steps, each followed by distillation (default 1)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, AdamW (default 1e-3)")
    parser.add_argument("--lr-schedule", choices=("onecycle", "cosine"), default="onecycle",
                        help="learning-rate schedule (default onecycle)")
    parser.add_argument("--batch-size", type=int, default=16, help="distillation batch size (default 16)")
    parser.add_argument("--eval-every", type=int, default=25, help="score the student for early stopping every N steps (default 25)")
    parser.add_argument("--patience", type=int, default=1000,
                        help="stop after N scores without improvement (default 1000: run every step, keep the best)")
    parser.add_argument("--task-weight", type=float, default=1.0,
                        help="weight of the task loss when the distillation data have labels (default 1.0; the "
                             "teacher's outputs are the loss on unlabelled data)")
    parser.add_argument("--ema", type=float, default=0.99,
                        help="decay of the weight average that is scored and kept (default 0.99; 0 keeps the raw weights)")
    parser.add_argument("--eval", metavar="SOURCE", help="gate data (default: held out from --finetune)")
    parser.add_argument("--eval-samples", type=int, default=None,
                        help="samples first drawn for the gate (default 2000 from synthetic sources, which are "
                             "unlimited and drawn further until the drop's CI half-width is at most a third of "
                             "--max-drop; 200 otherwise)")
    parser.add_argument("--select-samples", type=int, default=1000,
                        help="synthetic samples that pick the best distillation state (default 1000)")
    parser.add_argument("--metric", help="metric name (default: the task's, e.g. auroc, dice, pearson; 'fidelity' is the R² "
                             "against the dense model's outputs, the default where the data's targets do not fit them)")
    parser.add_argument("--max-drop", type=float,
                        help="largest allowed metric drop vs the dense model; a failing model is not written "
                             "(default with --sparsity auto: 0.005 AUROC/Pearson, 0.01 Dice)")
    parser.add_argument("--min-sparsity", type=float,
                        help="--sparsity auto: lowest sparsity tried (default 0.5, halved down to 0.25 when 0.5 fails)")
    parser.add_argument("--max-sparsity", type=float, default=0.7, help="--sparsity auto: highest sparsity tried (default 0.7)")
    parser.add_argument("--resolution", type=float, default=0.05, help="--sparsity auto: bisection resolution (default 0.05)")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="--sparsity auto: stop the search after this many seconds and keep the best passing "
                             "sparsity (default 1300, raised to fit every probe at the first probe's pace)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, pruning and distillation (default 0)")
    parser.add_argument("--threads", type=int,
                        help="torch threads for pruning and distillation (default: torch's; 1 is often fastest on a busy CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    parser.add_argument("--no-onnx-size", action="store_true", help="skip exporting ONNX files to measure their sizes")


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.export import parse_shape
    from medge.prune.pruner import PruneConfig, prune_model

    for flag, value in (("--eval-samples", args.eval_samples), ("--select-samples", args.select_samples)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1 (got {value})")
    config = PruneConfig(
        model=args.model,
        output=args.output,
        sparsity=parse_sparsity(args.sparsity),
        mode=args.mode,
        weights=args.weights,
        model_kwargs=parse_model_kwargs(args.model_kwargs),
        input_shape=parse_shape(args.input_shape) if args.input_shape else None,
        task=args.task,
        labels=[s.strip() for s in args.labels.split(",") if s.strip()] if args.labels else None,
        finetune=args.finetune,
        distill_steps=args.distill_steps,
        prune_steps=args.prune_steps,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
        patience=args.patience,
        task_weight=args.task_weight, ema=args.ema,
        eval=args.eval,
        eval_samples=args.eval_samples,
        select_samples=args.select_samples,
        metric=args.metric,
        max_drop=args.max_drop,
        min_sparsity=args.min_sparsity,
        max_sparsity=args.max_sparsity,
        resolution=args.resolution,
        time_budget=args.time_budget,
        round_to=args.round_to,
        seed=args.seed,
        threads=args.threads,
        progress=not args.no_progress,
        measure_onnx=not args.no_onnx_size,
    )
    return prune_model(config)
