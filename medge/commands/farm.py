"""`medge farm ls FARM.yaml`: the lab's devices: target, reachable, busy or free, last seen, facts."""

from __future__ import annotations

import argparse

HELP = "list the devices of a farm file: target, reachable, leased (busy) or free, last seen, facts"
EXAMPLE = ["medge farm ls lab.yaml", "medge profile build/a build/b --farm lab.yaml --all-devices"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("action", choices=["ls"], help="'ls': list the devices")
    parser.add_argument("farm", help="FARM.yaml: devices with name, target, address ssh://user@host[:port] or ray, tags")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each device (default 5)")


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.common.errors import UsageError
    from medge.scale.farm import farm_ls, load_farm

    if args.timeout <= 0:
        raise UsageError(f"--timeout must be > 0 (got {args.timeout})")
    return farm_ls(load_farm(args.farm), args.timeout)
