"""Argument parsing shared by several commands (argparse stays in medge/commands/).

The layers below take plain values or dataclasses: `declaration_from_args` builds the export
`Declaration` and `view_security_from_args` the apps' `ViewSecurity` from parsed flags.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from medge.apps.tls import TlsFiles
from medge.apps.view_security import ViewSecurity
from medge.common.errors import UsageError
from medge.common.metadata import TASKS
from medge.export.declare import INTENSITIES, MODALITIES, UNITS, Declaration


def parse_model_kwargs(text: str | None) -> dict:
    """Parse ``--model-kwargs`` (a JSON object) into a dict; '' or None gives {}."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--model-kwargs is not valid JSON ({exc.msg} at char {exc.pos}); e.g. '{{\"spatial_dims\": 2}}'") from None
    if not isinstance(value, dict):
        raise UsageError("--model-kwargs must be a JSON object, e.g. '{\"spatial_dims\": 2}'")
    return value


def non_negative_float(text: str) -> float:
    """argparse type for a value that cannot be negative (e.g. ``--max-drop``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value >= 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {text}); it is the largest allowed drop, e.g. 0.005")
    return value


def positive_int(text: str) -> int:
    """argparse type for a count that must be at least 1 (sizes, resamples)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


# One rule for `compile` and `build`, stated in both helps.
PRECISION_HELP = ("default: the target's default precision (the 'default' column of 'medge devices list', e.g. "
                  "fp16 for jetson-orin-nano, fp32 for intel-cpu, int8 for intel-npu); int8 needs calibration data")


def add_declaration_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the model-description flags (shared by `medge export` and `medge build`)."""
    group = parser.add_argument_group("model description (non-zoo models; default: see 'assumed' in the report)")
    group.add_argument("--preprocess", metavar="FILE|JSON", help="preprocessing block (metadata schema) as a JSON file or string")
    group.add_argument("--like", metavar="ZOO_NAME", help="copy a zoo card's preprocessing, labels and task")
    group.add_argument("--modality", help=f"DICOM modality ({', '.join(MODALITIES)})")
    group.add_argument("--intensity", choices=INTENSITIES, help="raw → [0, 1]: unit (already), uint8 (/255), minmax, window")
    group.add_argument("--window", metavar="C,W", help="window center and width (implies --intensity window)")
    group.add_argument("--mean", metavar="M[,M,M]", help="per-channel mean applied after scaling to [0, 1]")
    group.add_argument("--std", metavar="S[,S,S]", help="per-channel std applied after scaling to [0, 1]")
    group.add_argument("--channels", type=int, help="input channels (must match the input shape)")
    group.add_argument("--layout", help="NCHW/NHWC for images, NCL/NLC for signals")
    group.add_argument("--leads", metavar="II,V1,V5", help="signal leads, in input order")
    group.add_argument("--sample-rate", type=float, metavar="HZ", help="signal sample rate in Hz")
    group.add_argument("--units", choices=UNITS, help="signal units the model takes")
    group.add_argument("--task", help=f"task, picks the gate's default metric ({', '.join(TASKS)})")
    group.add_argument("--labels", help="comma-separated output labels")


def declaration_from_args(args: argparse.Namespace) -> Declaration:
    """The `Declaration` carried by parsed CLI arguments (missing attributes count as undeclared)."""
    return Declaration(**{f.name: getattr(args, f.name, None) for f in fields(Declaration)})


def add_view_security_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tls-cert``, ``--tls-key``, ``--auth-token-file``, ``--insecure-bind`` for a command with a view."""
    parser.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve the browser view over HTTPS with this certificate")
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert")
    parser.add_argument("--auth-token-file", type=Path, metavar="FILE",
                        help="the browser view asks for this token (bearer, basic-auth password, or the printed "
                             "…/login#token= link)")
    parser.add_argument("--insecure-bind", action="store_true",
                        help="allow a browser view on a non-loopback address without --auth-token-file")


def view_security_from_args(args: argparse.Namespace) -> ViewSecurity:
    """The `ViewSecurity` of parsed `add_view_security_arguments` flags."""
    return ViewSecurity(TlsFiles(args.tls_cert, args.tls_key), args.auth_token_file, args.insecure_bind)
