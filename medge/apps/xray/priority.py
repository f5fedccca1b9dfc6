"""Operating points and triage priority (CADt: flag and move up, never remove, never lower).

An operating point is one threshold per finding, tied to the model's sha256: a thresholds file made
for another model is refused.  Its version is a short hash of its content, recorded with every
result and in every SR.  Defaults come from the model metadata (``extra.operating_points``:
``{finding: threshold}``), else 0.5.

Priority levels: ``URGENT`` (an urgent finding present) > ``OVERDUE`` (not analysed within
``--max-wait``) > ``FLAGGED`` (a non-urgent finding present) > ``STANDARD``.  Among equals the
oldest comes first.  The database only ever raises a priority.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medge.common.errors import DataError

STANDARD, FLAGGED, OVERDUE, URGENT = 0, 1, 2, 3
PRIORITY_NAMES = {STANDARD: "standard", FLAGGED: "flagged", OVERDUE: "overdue", URGENT: "urgent"}
URGENT_FINDINGS = frozenset({"pneumothorax", "effusion", "pneumonia", "edema", "consolidation"})
DEFAULT_THRESHOLD = 0.5
FORMAT = "medge-xray-operating-points"


@dataclass
class OperatingPoint:
    """The threshold of one finding and, when chosen on data, what it achieved there."""

    threshold: float
    urgent: bool
    sensitivity: float | None = None
    specificity: float | None = None
    positives: int | None = None
    negatives: int | None = None


@dataclass
class OperatingPoints:
    """Per-finding thresholds for one model (by sha256)."""

    model_sha256: str
    points: dict[str, OperatingPoint]
    source: str
    target_sensitivity: float | None = None
    eval_source: str | None = None
    eval_sha256: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def version(self) -> str:
        """Short content hash: model hash + thresholds + urgency (what decides a flag)."""
        core = {"model": self.model_sha256,
                "points": {k: [round(p.threshold, 9), p.urgent] for k, p in sorted(self.points.items())}}
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written by ``medge xray thresholds``."""
        return {"format": FORMAT, "version": self.version, "model_sha256": self.model_sha256, "source": self.source,
                "target_sensitivity": self.target_sensitivity, "eval_source": self.eval_source,
                "eval_sha256": self.eval_sha256, "notes": self.notes,
                "points": {k: asdict(p) for k, p in self.points.items()}}

    def evaluate(self, scores: dict[str, float]) -> tuple[list[str], int]:
        """Findings present at these thresholds and the priority they give."""
        flags = [name for name, p in self.points.items() if scores.get(name, float("-inf")) >= p.threshold]
        if any(self.points[name].urgent for name in flags):
            return flags, URGENT
        return flags, FLAGGED if flags else STANDARD


def default_points(labels: list[str], extra: dict[str, Any], model_sha256: str) -> OperatingPoints:
    """Operating points from the model metadata (``extra.operating_points``), else 0.5 each."""
    stored = extra.get("operating_points") if isinstance(extra, dict) else None
    stored = stored if isinstance(stored, dict) else {}
    points = {name: OperatingPoint(float(stored.get(name, DEFAULT_THRESHOLD)), name in URGENT_FINDINGS)
              for name in labels}
    source = "model metadata" if stored else f"default {DEFAULT_THRESHOLD}"
    return OperatingPoints(model_sha256, points, source)


def load_points(path: str | Path, labels: list[str], model_sha256: str) -> OperatingPoints:
    """Read a thresholds file and check it belongs to this model and covers its findings."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read thresholds file {path} ({exc}); make one with 'medge xray thresholds'") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("points"), dict):
        raise DataError(f"{path} is not a thresholds file; make one with 'medge xray thresholds'")
    if data.get("model_sha256") != model_sha256:
        raise DataError(f"{path} was made for model {str(data.get('model_sha256'))[:12]}, not this bundle's "
                        f"{model_sha256[:12]}; rerun 'medge xray thresholds' for this bundle")
    missing = [name for name in labels if name not in data["points"]]
    if missing:
        raise DataError(f"{path} has no threshold for {', '.join(missing)}; rerun 'medge xray thresholds'")
    known = set(OperatingPoint.__dataclass_fields__)
    points = {name: OperatingPoint(**{k: v for k, v in data["points"][name].items() if k in known}) for name in labels}
    ops = OperatingPoints(model_sha256, points, f"file {path.name}", data.get("target_sensitivity"),
                          data.get("eval_source"), data.get("eval_sha256"), list(data.get("notes", [])))
    if data.get("version") not in (None, ops.version):
        raise DataError(f"{path} was edited after it was made (version {data.get('version')} != {ops.version}); "
                        "rerun 'medge xray thresholds'")
    return ops


def threshold_at_sensitivity(scores: np.ndarray, truth: np.ndarray, sensitivity: float) -> OperatingPoint | None:
    """The highest threshold whose sensitivity (score >= t on positives) reaches `sensitivity`.

    Returns None when the data has no positive case for this finding.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth) > 0.5
    pos, neg = scores[truth], scores[~truth]
    if pos.size == 0:
        return None
    ordered = np.sort(pos)[::-1]
    need = max(1, int(np.ceil(sensitivity * pos.size - 1e-9)))
    threshold = float(ordered[need - 1])
    sens = float(np.mean(pos >= threshold))
    spec = float(np.mean(neg < threshold)) if neg.size else float("nan")
    return OperatingPoint(threshold, False, sens, spec, int(pos.size), int(neg.size))
