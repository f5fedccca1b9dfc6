"""`medge ecg fit --personalize RECORD`: fine-tune the reconstruction on one patient's own 12-lead.

The record is cut into model-length windows in time order: the first `train_fraction` of them
fine-tune the net (its last fifth picks the epoch), the rest are that patient's held-out minutes.
The report gives, on those held-out minutes, the starting model (`--init`), a least-squares map
fitted to the patient's training minutes, and the personalised net: the gain is net − start.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from medge.apps.ecg.fit import (
    ZOO_MODEL,
    FitData,
    Schedule,
    record_windows,
    check_fit_options,
    derive_decision,
    evaluate,
    export_fitted,
    fit_linear,
    linear_infer,
    model_geometry,
    stable,
    torch_infer,
    train_net,
)
from medge.apps.ecg.io_wfdb import read_ecg
from medge.apps.ecg.reconstruct import STANDARD_LEADS, LeadModel
from medge.common.errors import DataError, UsageError
from medge.zoo import build_model

MIN_WINDOWS = 4  # 2 to fine-tune (one of them picks the epoch), 2 held out


def _split(wins: list[tuple[np.ndarray, np.ndarray]], train_fraction: float, name: str) -> tuple[FitData, FitData, FitData]:
    n_train = int(round(train_fraction * len(wins)))
    n_train = min(max(n_train, 2), len(wins) - 2)
    n_val = max(1, n_train // 5)

    def pack(part: list[tuple[np.ndarray, np.ndarray]]) -> FitData:
        return FitData(np.stack([w[0] for w in part]), np.stack([w[1] for w in part]), [name] * len(part))

    return pack(wins[:n_train - n_val]), pack(wins[n_train - n_val:n_train]), pack(wins[n_train:])


def _start_model(init: str, leads: tuple[str, ...], rate: float, samples: int, derive: bool):
    """The net personalisation starts from (the zoo demo weights, or a random one) as a module."""
    import torch

    torch.manual_seed(0)
    net = build_model(ZOO_MODEL, pretrained=init == ZOO_MODEL)
    return LeadModel(torch_infer(net), leads, STANDARD_LEADS, rate, samples, derive_limb_leads=derive, name=init)


def run_personalize(record: str, output: str, *, init: str = ZOO_MODEL, schedule: Schedule = Schedule(),
                    train_fraction: float = 0.5) -> dict[str, Any]:
    """Fine-tune on the first `train_fraction` of `record`, report before/after on the rest, export the ONNX."""
    check_fit_options(init, schedule.epochs)
    if not 0 < train_fraction < 1:
        raise UsageError("--personal-train must be between 0 and 1, e.g. 0.5")
    leads, rate, samples = model_geometry()
    t0 = time.perf_counter()
    path = Path(record[:-4] if record.endswith(".hea") else record)
    wins = record_windows(read_ecg(path), leads, rate, samples)
    if len(wins) < MIN_WINDOWS:
        raise DataError(f"--personalize {record}: {len(wins)} full {samples / rate:g} s window(s) of the 12 leads; "
                        f"personalising needs at least {MIN_WINDOWS} ({MIN_WINDOWS * samples / rate:g} s): "
                        "record a few minutes of the patient's 12-lead")
    train, val, held_out = _split(wins, train_fraction, path.name)
    derive, residual = derive_decision(train)
    coef = fit_linear(FitData(np.concatenate([train.inputs, val.inputs]), np.concatenate([train.targets, val.targets]),
                              train.records + val.records))
    start = _start_model(init, leads, rate, samples, derive)
    net, facts = train_net(train, coef, init=init, schedule=schedule, val=val)
    fitted = LeadModel(torch_infer(net), leads, STANDARD_LEADS, rate, samples, derive_limb_leads=derive, name="model")
    linear = LeadModel(linear_infer(coef), leads, STANDARD_LEADS, rate, samples, derive_limb_leads=derive,
                       name="linear")
    before, after = evaluate(start, held_out, leads, rate), evaluate(fitted, held_out, leads, rate)
    minutes = {"fine_tune_s": (len(train.inputs) + len(val.inputs)) * samples / rate,
               "held_out_s": len(held_out.inputs) * samples / rate}
    fit_info = {"personalized_on": path.name, "init": init, "seed": schedule.seed, **minutes, **stable(facts)}
    sha = export_fitted(net, output, derive, fit_info)
    return {"onnx": str(output), "sha256": sha, "record": path.name, **minutes,
            "derive_limb_leads": derive, "einthoven_residual": residual, "train": facts,
            "held_out": {"before": before, "patient_linear": evaluate(linear, held_out, leads, rate), "after": after},
            "gain_mean_pearson_r": after["mean_pearson_r"] - before["mean_pearson_r"],
            "seconds": round(time.perf_counter() - t0, 1)}
