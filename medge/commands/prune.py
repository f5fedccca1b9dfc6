"""`medge prune`: structured (channel) or unstructured (magnitude) pruning, optional fine-tuning."""

from __future__ import annotations

import argparse

from medge.commands.common_args import parse_model_kwargs
from medge.errors import UsageError

HELP = "prune a PyTorch model (structured channels or unstructured weights) and save it as a .pt2 for 'medge export'"
EXAMPLE = "medge prune cxr-densenet-tiny --sparsity 0.3 --round-to 8 -o cxr-pruned.pt2"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("model", help="zoo name or package.module:factory (with --weights)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.pt2",
                        help="ExportedProgram to write (plus OUT.pt2.medge.json metadata); pass it to 'medge export'")
    parser.add_argument("--sparsity", type=float, default=0.5,
                        help="fraction of channels (structured) or weights (unstructured) to remove (default 0.5)")
    parser.add_argument("--mode", choices=("structured", "unstructured"), default="structured",
                        help="structured removes channels (smaller, faster); unstructured zeroes weights (default structured)")
    parser.add_argument("--weights", metavar="PATH", help="safetensors or state-dict checkpoint to load")
    parser.add_argument("--model-kwargs", metavar="JSON", help="JSON object of factory keyword arguments")
    parser.add_argument("--input-shape", metavar="NxCx...", help="input shape, e.g. 1x1x256x256 (required for non-zoo models)")
    parser.add_argument("--round-to", type=int, metavar="N", help="keep channel counts multiples of N (e.g. 8 for NPUs)")
    parser.add_argument("--finetune", metavar="SOURCE", help="fine-tune after pruning on this data (e.g. synthetic:cxr)")
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs (default 1)")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate, Adam (default 1e-3)")
    parser.add_argument("--batch-size", type=int, default=8, help="fine-tuning batch size (default 8)")
    parser.add_argument("--finetune-samples", type=int, default=128, help="samples drawn for fine-tuning (default 128)")
    parser.add_argument("--eval", metavar="SOURCE", help="evaluate the task metric before/after on this data")
    parser.add_argument("--eval-samples", type=int, default=100, help="samples drawn for evaluation (default 100)")
    parser.add_argument("--metric", help="metric name (default: the task's, e.g. auroc, dice, pearson)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data sampling and fine-tuning (default 0)")
    parser.add_argument("--no-onnx-size", action="store_true", help="skip exporting ONNX files to measure their sizes")


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.export import parse_shape
    from medge.quantize.prune import PruneConfig, prune_model

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1 (got {args.batch_size})")
    config = PruneConfig(
        model=args.model,
        output=args.output,
        sparsity=args.sparsity,
        mode=args.mode,
        weights=args.weights,
        model_kwargs=parse_model_kwargs(args.model_kwargs),
        input_shape=parse_shape(args.input_shape) if args.input_shape else None,
        finetune=args.finetune,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        finetune_samples=args.finetune_samples,
        eval=args.eval,
        eval_samples=args.eval_samples,
        metric=args.metric,
        round_to=args.round_to,
        seed=args.seed,
        measure_onnx=not args.no_onnx_size,
    )
    return prune_model(config)
