"""Argument parsing shared by several commands."""

from __future__ import annotations

import argparse
import json

from medge.common.errors import UsageError


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
