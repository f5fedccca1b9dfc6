"""`medge inspect`: metadata, inputs/outputs, op histogram, parameters and MACs of an ONNX file."""

from __future__ import annotations

import argparse

HELP = "show an ONNX file's medge metadata, inputs/outputs, op histogram, parameters and MACs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("onnx", metavar="MODEL.onnx", help="ONNX file to inspect")


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.export import inspect_onnx

    return inspect_onnx(args.onnx)
