"""`medge profile` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse

from medge.errors import MedgeError

HELP = "profile (not built yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""


def run(args: argparse.Namespace):
    """Run the command."""
    raise MedgeError("'medge profile' is not available in this build yet")
