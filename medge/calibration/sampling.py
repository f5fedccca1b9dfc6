"""Candidates found in a source, and deterministic, class-stratified drawing of samples.

A source lists cheap `Candidate`s (a file, a DICOM frame, an ECG window, an array row) with their
target when it is known up front.  `draw` picks `n` of them with a seeded RNG, proportionally to
each class combination, decodes only the picked ones and replaces a candidate that fails to decode
by another one of the same class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medge.common.errors import DataError


class SkipSample(Exception):
    """Raised by a candidate's loader: this item cannot be used; the message is the reason."""


def error_detail(exc: BaseException, path: Path | str) -> str:
    """``Type: message`` on one short line, with the file's folder left out.

    Reports name files relative to the source root; absolute paths (which may hold patient
    names in folder names) must not come back through a library's error message.
    """
    path = Path(path)
    message = " ".join(str(exc).split())
    for long, short in ((str(path), path.name), (str(path.parent), ".")):
        if long and long != ".":
            message = message.replace(long, short)
    return f"{type(exc).__name__}: {message[:200]}"


@dataclass(frozen=True)
class Candidate:
    """One potential sample: a report name, its target if known, and a loader.

    `load()` returns ``(model_input_without_batch, target_or_None)`` or raises `SkipSample`;
    a target it returns (e.g. 12 leads read with the ECG window) overrides `target`.
    """

    item: str
    load: Callable[[], tuple[np.ndarray, np.ndarray | None]]
    target: np.ndarray | None = None
    stratum: str | None = None


@dataclass
class Drawn:
    """A decoded candidate."""

    candidate: Candidate
    inputs: np.ndarray
    target: np.ndarray | None


def _quotas(sizes: list[int], n: int) -> list[int]:
    """Proportional allocation of `n` over groups (largest remainder), ≥ 1 per group if possible."""
    total = sum(sizes)
    exact = [n * s / total for s in sizes]
    quotas = [int(np.floor(e)) for e in exact]
    if n >= len(sizes):
        quotas = [max(q, 1) for q in quotas]
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - np.floor(exact[i])), i))
    while sum(quotas) < n:
        for i in order:
            if sum(quotas) < n and quotas[i] < sizes[i]:
                quotas[i] += 1
    while sum(quotas) > n:  # the ≥1 floor can overshoot: trim the largest groups
        i = max(range(len(sizes)), key=lambda j: (quotas[j], -j))
        quotas[i] -= 1
    return quotas


def draw(candidates: list[Candidate], n: int, seed: int,
         on_skip: Callable[[str, str], None]) -> tuple[list[Drawn], bool]:
    """Decode up to `n` candidates picked with `seed`, stratified when candidates have strata.

    Returns the decoded samples in a deterministic order and whether stratification was used.
    `on_skip(item, reason)` is called for every candidate that failed to decode.
    """
    if n < 1:
        raise DataError(f"sample count must be >= 1 (got {n}); ask for at least one sample")
    rng = np.random.default_rng(seed)
    stratified = any(c.stratum is not None for c in candidates)
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        groups.setdefault(c.stratum if stratified else "", []).append(i)
    keys = sorted(groups)
    queues = {k: [groups[k][j] for j in rng.permutation(len(groups[k]))] for k in keys}
    quotas = dict(zip(keys, _quotas([len(queues[k]) for k in keys], min(n, len(candidates)))))

    drawn: list[Drawn] = []
    leftovers: list[int] = []
    for key in keys:
        got, pos, queue = 0, 0, queues[key]
        while got < quotas[key] and pos < len(queue):
            decoded = _try_load(candidates[queue[pos]], on_skip)
            if decoded is not None:
                drawn.append(decoded)
                got += 1
            pos += 1
        leftovers += queue[pos:]
    # Classes that ran short are topped up from whatever is left, in a seeded order.
    for idx in (leftovers[j] for j in rng.permutation(len(leftovers))):
        if len(drawn) >= n:
            break
        decoded = _try_load(candidates[idx], on_skip)
        if decoded is not None:
            drawn.append(decoded)
    order = rng.permutation(len(drawn))
    return [drawn[j] for j in order], stratified


def _try_load(candidate: Candidate, on_skip: Callable[[str, str], None]) -> Drawn | None:
    try:
        inputs, target = candidate.load()
    except (SkipSample, DataError) as exc:
        on_skip(candidate.item, str(exc))
        return None
    if not np.all(np.isfinite(inputs)):
        on_skip(candidate.item, "input has NaN or infinite values after preprocessing")
        return None
    return Drawn(candidate, inputs, target if target is not None else candidate.target)
