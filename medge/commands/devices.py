"""`medge devices list|show NAME`: the compile targets medge knows (profiles are data)."""

from __future__ import annotations

import argparse

from medge.common.errors import UsageError

HELP = "list the compile targets or show one target's profile"
EXAMPLE = ["medge devices list", "medge devices show jetson-orin-nano"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("action", choices=("list", "show"), help="list every target, or show one target's profile")
    parser.add_argument("name", nargs="?", help="target name for 'show' (see 'medge devices list')")


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.devices import TARGETS, get_target
    from medge.common.reports import DictReport, ListReport

    if args.action == "show":
        if not args.name:
            raise UsageError("'medge devices show' needs a target name; see 'medge devices list'")
        profile = get_target(args.name)
        data = profile.to_dict()
        data.pop("name")
        return DictReport(name=profile.name, data=data)
    items = []
    for name in TARGETS.names():
        p = get_target(name)
        items.append({
            "name": p.name, "family": p.family, "recipe": p.recipe, "runtime": p.runtime,
            "device": p.runtime_device, "toolkit": f"{p.toolkit.name} {p.toolkit.version}",
            "precisions": ",".join(p.precisions), "default": p.default_precision,
            "int8_accelerated": p.int8_accelerated, "memory_mb": p.memory_mb,
        })
    return ListReport(kind="targets", items=items)
