"""Read a YAML file into plain data and check its keys, with one-line errors and "did you mean"."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medge.common.errors import UsageError, did_you_mean


def load_yaml(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping at the top of the YAML file `path`; anything else is a one-line `UsageError`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} file not found: {path}; give the path of a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise UsageError(f"{path} is not valid YAML{where}: {problem}; fix the {what} file") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a {what} file is a YAML mapping (key: value lines), not {type(data).__name__}")
    return data


def check_keys(data: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    """Refuse keys of `data` outside `allowed`, suggesting the closest one."""
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            raise UsageError(f"{where}: unknown key '{key}';{did_you_mean(str(key), allowed)} "
                             f"keys: {', '.join(allowed)}")


def check_choice(value: Any, choices: Iterable[str], where: str) -> str:
    """`value` when it is one of `choices`, else a one-line error with a suggestion."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise UsageError(f"{where}: unknown value '{value}';{did_you_mean(str(value), choices)} "
                         f"choices: {', '.join(choices)}")
    return value


def as_list(value: Any, where: str) -> list[Any]:
    """A scalar or a list → a non-empty list."""
    items = value if isinstance(value, list) else [value]
    if not items or any(v is None for v in items):
        raise UsageError(f"{where}: give at least one value")
    return items


def positive_number(value: Any, where: str, *, integer: bool = False, allow_zero: bool = False) -> float | int:
    """A number > 0 (or >= 0), else a one-line error."""
    ok_type = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or value < 0 or (value == 0 and not allow_zero):
        kind = "an integer" if integer else "a number"
        raise UsageError(f"{where}: must be {kind} {'>= 0' if allow_zero else '> 0'} (got {value!r})")
    return value
