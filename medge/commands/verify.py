"""`medge verify BUNDLE`: recheck every file hash of a bundle against its manifest."""

from __future__ import annotations

import argparse

HELP = "recheck a bundle's files against its manifest and print the manifest's sha256 (exit 1 on any problem)"
EXAMPLE = "medge verify build/cxr-intel --expect-sha256 SHA256_PRINTED_BY_COMPILE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("bundle", help="bundle folder written by 'medge compile'")
    parser.add_argument("--expect-sha256", metavar="HEX", type=_sha256,
                        help="fail unless manifest.json has this sha256 (the 'manifest sha256' that compile printed)")


def _sha256(text: str) -> str:
    value = text.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a sha256 (64 hex digits)")
    return value


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.common.bundle import verify_bundle
    from medge.common.errors import BundleError
    from medge.runtimes.model_file import artifact_problems

    report = verify_bundle(args.bundle, expect_sha256=args.expect_sha256, artifact_problems=artifact_problems)
    if not report.ok:  # the table lists every problem; the error line says the first
        problems = report.problems()
        error = BundleError(f"bundle {args.bundle} fails verification ({len(problems)} problem(s)): {problems[0]}")
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report
