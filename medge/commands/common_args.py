"""Argument parsing shared by several commands."""

from __future__ import annotations

import json

from medge.errors import UsageError


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
