"""`medge export`: PyTorch model → one verified, self-contained ONNX file with medical metadata."""

from __future__ import annotations

import argparse

from medge.commands.common_args import add_declaration_arguments, declaration_from_args, parse_model_kwargs

HELP = "export a PyTorch model (zoo name, package.module:factory, .pt2, .pt) to ONNX with a parity check"
EXAMPLE = "medge export cxr-densenet-tiny -o cxr.onnx"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("model", help="zoo name, package.module:factory, ExportedProgram .pt2 or TorchScript .pt")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="ONNX file to write")
    parser.add_argument("--weights", metavar="PATH", help="safetensors or state-dict checkpoint to load")
    parser.add_argument("--model-kwargs", metavar="JSON", default=None, help="JSON object of factory keyword arguments")
    parser.add_argument("--input-shape", metavar="[NAME=]NxCx...[:DTYPE]", action="append",
                        help="input shape, e.g. 1x1x256x256 (required for non-zoo models); repeat with names for "
                             "several inputs: image=1x1x256x256 point=1x1x2:float32 (the image input first)")
    parser.add_argument("--input-default", metavar="NAME=JSON", action="append", default=[],
                        help="value fed to a non-image input when the data source has only images (repeatable)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default 17 via TorchScript, falling back to 18 via dynamo)")
    parser.add_argument("--dynamic-batch", action="store_true", help="export a dynamic batch dimension (parity at batch 1 and 2)")
    parser.add_argument("--samples", metavar="PATH", help=".npy/.npz of model-ready inputs to add to the parity check")
    parser.add_argument("--atol", type=float, default=1e-4, help="parity absolute tolerance (default 1e-4)")
    parser.add_argument("--rtol", type=float, default=1e-3, help="parity relative tolerance (default 1e-3)")
    add_declaration_arguments(parser)


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.common.console import Steps
    from medge.common.fileio import check_output_file

    check_output_file(args.output, "-o", suffix=".onnx")  # before any work
    from medge.export import export_onnx, load_model
    from medge.export.input_specs import parse_input_shapes, with_input_defaults
    from medge.export.exporter import plan_exporters

    plan_exporters(args.opset)  # reject an impossible --opset before loading anything
    from medge.export.declare import apply_declaration, check_declaration

    shape = with_input_defaults(parse_input_shapes(args.input_shape), args.input_default)
    declaration = declaration_from_args(args)
    check_declaration(args.model, declaration, shape[0].shape if isinstance(shape, list) else shape)  # bad flags fail before the model is built
    steps = Steps(4)
    steps(f"load {args.model}")
    loaded = load_model(args.model, weights=args.weights, model_kwargs=parse_model_kwargs(args.model_kwargs), input_shape=shape)
    notes = apply_declaration(loaded, declaration)
    report = export_onnx(
        args.model, args.output, opset=args.opset, dynamic_batch=args.dynamic_batch,
        samples=args.samples, atol=args.atol, rtol=args.rtol, loaded=loaded, progress=steps,
    )
    report.notes.extend(notes)
    return report
