"""Progress and warning lines on stderr (stdout is the report: a table or JSON).

Multi-step commands print one ``medge: [i/n] doing X`` line per step, as ``yolo export`` does;
anything the user must know but that does not stop the command (synthetic data, random weights)
is one ``medge: WARNING: …`` line.  Warnings are also kept on the report by the callers.
"""

from __future__ import annotations

import sys


def step(index: int, total: int, text: str) -> None:
    """Print ``medge: [index/total] text`` on stderr."""
    print(f"medge: [{index}/{total}] {text}", file=sys.stderr, flush=True)


def warn(text: str) -> None:
    """Print ``medge: WARNING: text`` on stderr."""
    print(f"medge: WARNING: {text}", file=sys.stderr, flush=True)


class Steps:
    """Numbered step lines for one command: ``steps("export to ONNX")`` prints ``medge: [2/4] export to ONNX``."""

    def __init__(self, total: int, *, enabled: bool = True, start: int = 0) -> None:
        self.total, self.enabled, self.index = total, enabled, start

    def __call__(self, text: str) -> None:
        self.index += 1
        if self.enabled:
            step(self.index, self.total, text)
