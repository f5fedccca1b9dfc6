"""Helpers for the scale-out tests: run the real CLI, write matrix files, read results.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from fixtures.cli_checks import medge_command


def medge(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `medge` CLI in `cwd`."""
    return subprocess.run([*medge_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def write_matrix(path: Path, text: str) -> Path:
    """Write a matrix/farm YAML file and return its path."""
    path.write_text(text)
    return path


def rows(out: Path) -> list[dict]:
    """Every row of OUT/results.jsonl."""
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
