"""``synthetic:<task>`` sources: wrap `medge.calibration.synthetic.generate` with the model's
preprocessing.

The calibration and evaluation splits draw from disjoint seed streams (one `SeedSequence` spawn
key per split), so the two sets never share a generated sample.  Plain ``synthetic`` picks the task
from the model: its metadata's ``synthetic_task`` (export writes a zoo card's there), or its
task/modality.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medge.calibration.labels import class_names, stratum_of
from medge.calibration.preprocess import image_to_model, signal_to_model
from medge.calibration.sampling import Candidate
from medge.common.errors import DataError, did_you_mean
from medge.common.metadata import ModelMeta
from medge.calibration.synthetic import generate

SYNTHETIC_TASKS = ("cxr", "us-frame", "us-seg", "ecg")
TASK_KINDS = {"cxr": "image", "us-frame": "image", "us-seg": "image", "ecg": "signal"}
SPLITS = ("calib", "eval")
# (task, modality) → generator, for models that carry no synthetic_task of their own.
TASK_BY_MODEL_KIND = {
    ("multilabel-classification", "CR"): "cxr",
    ("multilabel-classification", "DX"): "cxr",
    ("classification", "US"): "us-frame",
    ("segmentation", "US"): "us-seg",
    ("ecg-reconstruction", "ECG"): "ecg",
}


def infer_task(meta: ModelMeta | None) -> str:
    """The synthetic generator that fits the model (for a plain ``synthetic`` source)."""
    if meta is None:
        raise DataError("'synthetic' needs a model with medge metadata; write synthetic:<task> "
                        f"with task one of {', '.join(SYNTHETIC_TASKS)}")
    task = (meta.extra or {}).get("synthetic_task")
    if not task:
        task = TASK_BY_MODEL_KIND.get((meta.task, str(meta.preprocessing.get("modality", "")).upper()))
    if not task:
        raise DataError(f"cannot tell which synthetic data fits model '{meta.model}' ({meta.task}); "
                        f"write synthetic:<task> with task one of {', '.join(SYNTHETIC_TASKS)}")
    return str(task)


def split_seed(seed: int, split: str) -> int:
    """The generator seed for a split: disjoint streams for calib and eval."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    return int(np.random.SeedSequence([int(seed), SPLITS.index(split), 0x6D65]).generate_state(1)[0])


def _fits_model(targets: np.ndarray, meta: ModelMeta | None) -> bool:
    """Whether generated targets line up with the model's labels (e.g. 4 findings vs 14)."""
    if meta is None or meta.task != "multilabel-classification":
        return True
    return targets.ndim == 2 and targets.shape[1] == len(meta.labels)


def synthetic_candidates(spec: str, meta: ModelMeta | None, pre: dict[str, Any], *, kind: str, n: int,
                         seed: int, split: str) -> tuple[list[Candidate], str, str | None, list[str]]:
    """`n` generated candidates; returns ``(candidates, task, labels_from, notes)``."""
    _, _, task = spec.partition(":")
    task = task.strip() or infer_task(meta)
    if task not in SYNTHETIC_TASKS:
        raise DataError(f"unknown synthetic task '{task}';{did_you_mean(task, SYNTHETIC_TASKS)} "
                        f"choices: {', '.join(SYNTHETIC_TASKS)}")
    if TASK_KINDS[task] != kind:
        fits = ", ".join(t for t in SYNTHETIC_TASKS if TASK_KINDS[t] == kind)
        raise DataError(f"synthetic:{task} makes {TASK_KINDS[task]}s but this model takes {kind}s; use synthetic:{fits}")

    # generated at the model's own size (masks must match its output grid; the zoo's demo weights
    # were trained at that size); signals at the generator's native length
    size = {"size": int(pre["height"])} if kind == "image" and pre.get("height") else {}
    inputs, targets = generate(task, n, split_seed(seed, split), **size)
    inputs = np.asarray(inputs)
    notes = []
    if targets is not None and not _fits_model(np.asarray(targets), meta):
        notes.append(f"synthetic:{task} targets have {np.asarray(targets).shape[-1]} labels but the model has "
                     f"{len(meta.labels)}; targets dropped (inputs are still fine for calibration)")
        targets = None
    convert = (lambda x: image_to_model(x, pre)) if kind == "image" else (lambda x: signal_to_model(x, pre))

    def loader(i: int):
        return lambda: (convert(inputs[i]), None)

    candidates = []
    for i in range(len(inputs)):
        target = None if targets is None else np.asarray(targets[i])
        candidates.append(Candidate(f"synthetic:{task}[{i}]", loader(i), target,
                                    stratum_of(class_names(target, meta))))
    return candidates, task, ("synthetic" if targets is not None else None), notes
