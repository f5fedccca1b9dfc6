"""`medge zoo list` / `medge zoo show NAME`: the built-in models and their cards."""

from __future__ import annotations

import argparse

from medge.reports import DictReport, ListReport

HELP = "list the built-in medical models or show one model card"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    actions = parser.add_subparsers(dest="zoo_action", metavar="ACTION")
    actions.required = True
    actions.add_parser("list", help="list the zoo models")
    show = actions.add_parser("show", help="show one model card")
    show.add_argument("name", help="zoo model name (see 'medge zoo list')")


def _metric_text(metric: dict | None) -> str:
    if not metric:
        return "-"
    return f"{metric['name']}={metric['value']:.3f}"


def run(args: argparse.Namespace) -> ListReport | DictReport:
    """Run the command."""
    from medge.zoo import MODELS, get_card

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
