"""``medge xray thresholds``: choose one threshold per finding at a target sensitivity on labelled data.

The data goes through the same preprocessing as in the app (the model's metadata) via
`medge.calibration.load_data` (folders with labels, DICOM, ``synthetic:cxr``...).  For each
finding the threshold is the highest score that still catches the requested fraction of its
positives; the achieved sensitivity and specificity are reported.  The file is tied to the
model's sha256 and carries a content version that every result and SR records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medge.apps.xray.classifier import open_classifier
from medge.apps.xray.priority import (
    URGENT_FINDINGS,
    OperatingPoint,
    OperatingPoints,
    default_points,
    threshold_at_sensitivity,
)
from medge.common.errors import DataError
from medge.common.fileio import write_json_atomic
from medge.common.reports import Report
from medge.calibration.dataset import load_data


@dataclass
class ThresholdsReport(Report):
    """The chosen operating points and what they achieve on the evaluation data."""

    title: ClassVar[str] = "xray thresholds"
    output: str = ""
    version: str = ""
    model_sha256: str = ""
    eval_source: str = ""
    samples: int = 0
    target_sensitivity: float = 0.0
    points: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def choose_thresholds(bundle: Path, eval_source: str, sensitivity: float, output: Path, *,
                      samples: int = 300, seed: int = 0) -> ThresholdsReport:
    """Score `eval_source` with the bundle and write per-finding thresholds to `output`."""
    if not 0.0 < sensitivity <= 1.0:
        raise DataError(f"--sensitivity must be in (0, 1], got {sensitivity}")
    classifier = open_classifier(bundle)
    try:
        data = load_data(eval_source, classifier.meta, input_name=classifier.app_model.input_info.name,
                         input_shape=classifier.app_model.input_shape, n=samples, split="eval", seed=seed)
        targets = data.targets()
        if targets is None or targets.ndim != 2 or targets.shape[1] != len(classifier.labels):
            raise DataError(f"'{eval_source}' has no per-finding labels for {', '.join(classifier.labels)}; "
                            "pass a labelled folder/CSV or synthetic:cxr")
        scores = np.asarray([[s[name] for name in classifier.labels]
                             for s in (classifier.scores(feeds[data.input_name]) for feeds in data)])
    finally:
        classifier.close()
    defaults = default_points(classifier.labels, dict(classifier.meta.extra or {}), classifier.sha256)
    points: dict[str, OperatingPoint] = {}
    notes: list[str] = []
    for j, name in enumerate(classifier.labels):
        point = threshold_at_sensitivity(scores[:, j], targets[:, j], sensitivity)
        if point is None:
            notes.append(f"{name}: no positive case in the data; kept the default threshold "
                         f"{defaults.points[name].threshold:g}")
            point = defaults.points[name]
        point.urgent = name in URGENT_FINDINGS
        points[name] = point
    ops = OperatingPoints(classifier.sha256, points, "medge xray thresholds", sensitivity, eval_source,
                          data.report.sha256, notes)
    write_json_atomic(output, ops.to_dict())
    return ThresholdsReport(output=str(output), version=ops.version, model_sha256=classifier.sha256,
                            eval_source=eval_source, samples=len(data), target_sensitivity=sensitivity,
                            points={k: vars(p) for k, p in points.items()}, notes=notes)
