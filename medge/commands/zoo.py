"""`medge zoo list` / `medge zoo show NAME`: the built-in models and their cards."""

from __future__ import annotations

import argparse

from medge.common.errors import UsageError
from medge.common.reports import DictReport, ListReport

HELP = "list the built-in medical models or show one model card"
EXAMPLE = ["medge zoo list", "medge zoo show cxr-densenet-tiny"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    # a positional action (not nested sub-parsers) keeps --report/--json valid after it
    parser.add_argument("zoo_action", choices=("list", "show"), metavar="{list,show}",
                        help="list: all models; show NAME: one model card")
    parser.add_argument("name", nargs="?", help="zoo model name for 'show' (see 'medge zoo list')")


def _metric_text(metric: dict | None) -> str:
    if not metric:
        return "-"
    return f"{metric['name']}={metric['value']:.3f}"


def run(args: argparse.Namespace) -> ListReport | DictReport:
    """Run the command."""
    from medge.zoo import MODELS, get_card

    if args.zoo_action == "show" and not args.name:
        raise UsageError("'medge zoo show' needs a model name, e.g. medge zoo show cxr-densenet-tiny")
    if args.zoo_action == "list" and args.name:
        raise UsageError(f"'medge zoo list' takes no model name; use: medge zoo show {args.name}")
    if args.zoo_action == "show":
        card = get_card(args.name)
        return DictReport(name=card.name, data={k: v for k, v in card.to_dict().items() if k != "name"})
    items = []
    for name in MODELS.names():
        card = get_card(name)
        items.append(
            {
                "name": card.name,
                "task": card.task,
                "modality": card.modality,
                "input": "x".join(str(d) for d in card.input_shape),
                "params": card.params,
                "macs": card.macs,
                "demo_weights": card.weights is not None,
                "metric": _metric_text(card.demo_metric),
            }
        )
    return ListReport(kind="zoo models", items=items)
