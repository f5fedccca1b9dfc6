"""`medge verify BUNDLE`: recheck every file hash of a bundle against its manifest."""

from __future__ import annotations

import argparse

HELP = "recheck a bundle's files against its manifest (exit 1 on any problem)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("bundle", help="bundle folder written by 'medge compile'")


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.devices.bundle import verify_bundle

    return verify_bundle(args.bundle)
