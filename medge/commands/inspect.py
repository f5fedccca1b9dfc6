"""`medge inspect`: metadata, inputs/outputs, op histogram, parameters and MACs of an ONNX file."""

from __future__ import annotations

import argparse

HELP = "show the medge metadata, inputs/outputs, op histogram, parameters and MACs of an ONNX file, an OpenVINO .xml or a bundle"
EXAMPLE = ["medge inspect cxr.onnx", "medge inspect build/cxr-intel"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("onnx", metavar="MODEL.onnx|MODEL.xml|BUNDLE", help="ONNX file, OpenVINO IR .xml or bundle folder to inspect")


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.export.inspect import inspect_path

    return inspect_path(args.onnx)
