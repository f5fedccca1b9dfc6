"""`medge compare A B [C ...]`: run the same inputs through several artifacts and report parity."""

from __future__ import annotations

import argparse

HELP = "compare outputs of artifacts/runtimes on the same inputs (max abs/rel error, cosine, task metric)"
EXAMPLE = ["medge compare model.onnx build/cxr-intel", "medge compare BUNDLE --reference   # on the device"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="reference first, then the others (.onnx, .xml, .tflite, .engine, bundle folders); append @RUNTIME to pick the runtime, e.g. model.onnx@openvino; with --reference: one bundle")
    parser.add_argument("--reference", action="store_true",
                        help="check one bundle's artifact against the reference inputs/outputs stored in it at compile "
                             "(on the device, e.g. after building a TensorRT engine)")
    parser.add_argument("--inputs", help="data source (folder, DICOM, WFDB, .npz, synthetic:<task>); default seeded random normals")
    parser.add_argument("--n", type=int, default=16, help="number of inputs (default 16)")
    parser.add_argument("--metric", help="task metric against the targets of --inputs (default: the model task's metric)")
    parser.add_argument("--runtime-device", help="runtime device for every artifact (default: bundle's or cpu)")
    parser.add_argument("--precision", help="OpenVINO inference precision hint: f32 (CPU default), bf16, f16")
    parser.add_argument("--threads", type=int, help="intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="seed for random inputs (default 0)")
    parser.add_argument("--max-abs-error", type=float, help="fail when an artifact's max abs error exceeds this (default "
                        "per precision, as a fraction of the reference output range: fp32 1e-3, fp16 2e-2, int8 none)")
    parser.add_argument("--min-cosine", type=float, help="fail when an artifact's cosine similarity is below this "
                        "(default per precision: fp32 0.9999, fp16 0.999, int8 0.95)")


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.compare import CompareConfig, compare_artifacts, compare_to_reference_data

    return (compare_to_reference_data if args.reference else compare_artifacts)(
        CompareConfig(
            artifacts=args.artifacts,
            inputs=args.inputs,
            n=args.n,
            metric=args.metric,
            runtime_device=args.runtime_device,
            threads=args.threads,
            seed=args.seed,
            max_abs_error=args.max_abs_error,
            min_cosine=args.min_cosine,
            options={"precision": args.precision} if args.precision else {},
        )
    )
