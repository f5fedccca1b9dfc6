"""Fit the 3 → 12 lead reconstruction net to the user's own 12-lead WFDB records.

Records of any rate are resampled to the model's rate, filtered with the stream's filter chain
and cut into model-length windows.  The split into training and validation is by record (no
record in both; checked by hashing the samples).  A linear least-squares map (3 leads + offset →
12 leads) is fitted on the training records: it is the baseline to beat, and it initialises the
net's linear lead transform, so the TCN learns only the correction.  When the training records do
not obey Einthoven (III = II − I), the limb leads are predicted rather than derived, and the
written model says so in its metadata.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medge.apps.ecg.filters import filter_record
from medge.apps.ecg.io_wfdb import EcgRecord, read_ecg
from medge.apps.ecg.reconstruct import (
    STANDARD_LEADS,
    LeadModel,
    einthoven_residual,
    mean_r,
)
from medge.calibration.preprocess import resample_signal
from medge.calibration.wfdb_source import record_names
from medge.common.errors import DataError, UsageError
from medge.evaluate.metrics import ecg_per_lead
from medge.export import export_onnx, load_model
from medge.export.loading import state_dict_sha256
from medge.zoo import build_model, get_card

ZOO_MODEL = "ecg-3to12"
EINTHOVEN_TOLERANCE = 0.05  # RMS(III − (II − I)) / RMS(II) below this: derive the limb leads
CROP = 1024
BATCH = 16
PATIENCE = 4


@dataclass
class FitData:
    """Windows of one split: inputs (n, 3, L), targets (n, 12, L) in mV, and the record of each."""

    inputs: np.ndarray
    targets: np.ndarray
    records: list[str]


def collect_records(paths: list[str]) -> list[Path]:
    """Record paths (without suffix) from record paths and folders, in a stable order."""
    found: list[Path] = []
    for p in paths:
        names = record_names(Path(p))
        if not names:
            raise DataError(f"{p} is not a WFDB record or a folder of records (no .hea found)")
        found += names
    return sorted(dict.fromkeys(found))


def record_windows(rec: EcgRecord, input_leads: tuple[str, ...], rate: float,
                   samples: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Filtered, non-overlapping model-length (inputs, 12 leads) windows of one record, in time order."""
    targets = rec.pick(STANDARD_LEADS)
    inputs = rec.pick(input_leads)
    if targets is None or inputs is None:
        return []
    both = filter_record(resample_signal(np.concatenate([inputs, targets]), rec.rate_hz, rate), rate)
    out = []
    for s in range(0, both.shape[1] - samples + 1, samples):
        w = both[:, s:s + samples]
        if np.isfinite(w).all():
            out.append((w[:len(input_leads)].astype(np.float32), w[len(input_leads):].astype(np.float32)))
    return out


def load_split(records: list[Path], val_split: float, seed: int, input_leads: tuple[str, ...], rate: float,
               samples: int, progress=None) -> tuple[FitData, FitData, list[dict[str, str]]]:
    """Read, window and split records by record; records without the 12 leads are skipped."""
    per_record: dict[str, list] = {}
    skipped: list[dict[str, str]] = []
    for k, path in enumerate(records):
        try:
            wins = record_windows(read_ecg(path), input_leads, rate, samples)
        except DataError as exc:
            skipped.append({"record": path.name, "reason": str(exc)})
            continue
        if wins:
            per_record[path.name] = wins
        else:
            skipped.append({"record": path.name, "reason": "lacks the 12 standard leads or one full window"})
        if progress:
            progress(k + 1, len(records))
    names = sorted(per_record)
    if len(names) < 2:
        raise DataError(f"{len(names)} usable 12-lead record(s) of ≥ {samples / rate:g} s; fit needs at least 2 "
                        "(one for training, one for validation)")
    if not 0 < val_split < 1:
        raise UsageError("--val-split must be between 0 and 1, e.g. 0.2")
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = min(len(names) - 1, max(1, round(val_split * len(names))))
    val_names = {names[i] for i in order[:n_val]}

    def pack(selected: list[str]) -> FitData:
        wins = [(x, y, n) for n in selected for x, y in per_record[n]]
        return FitData(np.stack([w[0] for w in wins]), np.stack([w[1] for w in wins]), [w[2] for w in wins])

    train = pack([n for n in names if n not in val_names])
    val = pack([n for n in names if n in val_names])
    _check_disjoint(train, val)
    return train, val, skipped


def _check_disjoint(train: FitData, val: FitData, what: str = "validation") -> None:
    hashes = {hashlib.sha256(x.tobytes()).hexdigest() for x in train.inputs}
    dup = sum(hashlib.sha256(x.tobytes()).hexdigest() in hashes for x in val.inputs)
    if dup:
        raise DataError(f"{dup} {what} window(s) also occur in the training records (duplicate records); "
                        "remove the duplicates")


def fit_linear(train: FitData) -> np.ndarray:
    """Least-squares (12, 4) map from [inputs; 1] to the 12 leads over every training sample."""
    x = np.concatenate(list(train.inputs), axis=1).astype(np.float64)  # (3, total)
    y = np.concatenate(list(train.targets), axis=1).astype(np.float64)
    xa = np.vstack([x, np.ones((1, x.shape[1]))])
    coef, *_ = np.linalg.lstsq(xa.T, y.T, rcond=None)
    return coef.T


def evaluate(model: LeadModel, data: FitData, input_leads: tuple[str, ...], rate: float) -> dict[str, Any]:
    """Mean over validation windows of per-lead r / RMSE, and the mean r over the non-input leads."""
    per_window = [ecg_per_lead(model.window(x, rate), y, STANDARD_LEADS) for x, y in zip(data.inputs, data.targets)]
    per_lead = {lead: {m: float(np.nanmean([w[lead][m] for w in per_window])) for m in ("pearson_r", "rmse_uv")}
                for lead in STANDARD_LEADS}
    return {"per_lead": per_lead, "mean_pearson_r": mean_r(per_lead, input_leads), "windows": len(per_window)}


def _progress_bar(epoch: int, epochs: int, loss: float, t0: float) -> None:
    done = int(30 * epoch / epochs)
    print(f"\rfit [{'#' * done}{'.' * (30 - done)}] epoch {epoch}/{epochs} loss {loss:.4f} "
          f"{time.perf_counter() - t0:.0f}s", end="" if epoch < epochs else "\n", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Schedule:
    """How `train_net` trains: at most `epochs`, stopping after `patience` epochs without a better
    validation loss (the best epoch's weights are kept)."""

    epochs: int = 20
    seed: int = 0
    lr: float = 2e-3
    patience: int = PATIENCE
    augment: bool = True


def lead_scales(train: FitData) -> np.ndarray:
    """(12,) standard deviation of each target lead over the training windows (floored at 10 µV).

    The loss divides each lead's error by its scale, so small leads (aVL, III) weigh as much as
    large ones.
    """
    return np.maximum(train.targets.std(axis=(0, 2)), 0.01).astype(np.float32)


def _augment(xb, yb, gen):
    """Amplitude (×0.7–1.3, all leads), heart-rate stretch (×0.85–1.15, both sides), and on the
    inputs only: electrode noise and a residual baseline wander."""
    import torch
    import torch.nn.functional as F

    n, _, length = xb.shape
    stretch = float(torch.empty(1).uniform_(0.85, 1.15, generator=gen))
    src = min(length, max(8, round(length * stretch)))
    if src != length:  # one crop of `src` samples resampled to `length`: the beats get slower or faster
        xb = F.interpolate(xb[..., :src], size=length, mode="linear", align_corners=False)
        yb = F.interpolate(yb[..., :src], size=length, mode="linear", align_corners=False)
    amp = torch.empty(n, 1, 1).uniform_(0.7, 1.3, generator=gen)
    noise = torch.randn(xb.shape, generator=gen) * torch.empty(n, 1, 1).uniform_(0.0, 0.02, generator=gen)
    t = torch.arange(length, dtype=torch.float32)[None, None] / 500.0
    freq = torch.empty(n, xb.shape[1], 1).uniform_(0.05, 0.5, generator=gen)
    phase = torch.empty(n, xb.shape[1], 1).uniform_(0.0, 6.28, generator=gen)
    wander = torch.empty(n, xb.shape[1], 1).uniform_(0.0, 0.03, generator=gen) * torch.sin(2 * np.pi * freq * t + phase)
    return xb * amp + noise + wander, yb * amp


def _scaled_loss(pred, target, scale):
    import torch

    return torch.nn.functional.smooth_l1_loss(pred / scale, target / scale, beta=0.2)


def _val_loss(net, val: FitData, scale) -> float:
    import torch

    with torch.no_grad():
        losses = [float(_scaled_loss(net(torch.from_numpy(val.inputs[i:i + BATCH])),
                                     torch.from_numpy(val.targets[i:i + BATCH]), scale)) * len(val.inputs[i:i + BATCH])
                  for i in range(0, len(val.inputs), BATCH)]
    return sum(losses) / len(val.inputs)


def train_net(train: FitData, coef: np.ndarray, *, init: str, schedule: Schedule, val: FitData | None = None,
              log=None) -> tuple[Any, dict[str, Any]]:
    """Train the zoo architecture; returns the eval-mode module (the best validation epoch's
    weights when `val` is given) and the training facts.

    The linear lead transform starts from the least-squares `coef` and the TCN's output projection
    from zero, so training starts at the baseline; `init` chooses the TCN's other weights (the zoo
    demo weights, or a seeded random initialisation).  The loss weighs each lead by the inverse of
    its spread (`lead_scales`); `schedule.augment` adds `_augment` to every batch.
    """
    import copy

    import torch

    torch.manual_seed(schedule.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    net = build_model(ZOO_MODEL, pretrained=init == ZOO_MODEL)
    with torch.no_grad():
        net.linear.weight.copy_(torch.as_tensor(coef[:, :3, None], dtype=torch.float32))
        net.linear.bias.copy_(torch.as_tensor(coef[:, 3], dtype=torch.float32))
        net.out.weight.zero_()  # the net starts exactly at the linear baseline and learns the correction
        net.out.bias.zero_()
    scale = torch.from_numpy(lead_scales(train))[None, :, None]
    x_all, y_all = torch.from_numpy(train.inputs), torch.from_numpy(train.targets)
    n, length = x_all.shape[0], x_all.shape[2]
    crop = min(CROP, length)
    steps = max(1, int(np.ceil(n / BATCH)))  # an epoch: one random crop of every training window
    opt = torch.optim.AdamW(net.parameters(), lr=schedule.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=schedule.lr, total_steps=schedule.epochs * steps,
                                                pct_start=0.2)
    gen = torch.Generator().manual_seed(schedule.seed)
    t0 = time.perf_counter()
    best = (_val_loss(net.eval(), val, scale), 0, copy.deepcopy(net.state_dict())) if val is not None else None
    epoch = 0
    for epoch in range(1, schedule.epochs + 1):
        net.train()
        total = 0.0
        for _ in range(steps):
            idx = torch.randint(0, n, (BATCH,), generator=gen)
            start = torch.randint(0, length - crop + 1, (BATCH,), generator=gen)
            xb = torch.stack([x_all[i, :, s:s + crop] for i, s in zip(idx.tolist(), start.tolist())])
            yb = torch.stack([y_all[i, :, s:s + crop] for i, s in zip(idx.tolist(), start.tolist())])
            if schedule.augment:
                xb, yb = _augment(xb, yb, gen)
            loss = _scaled_loss(net(xb), yb, scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        (log or _progress_bar)(epoch, schedule.epochs, total / steps, t0)
        if best is not None:
            current = _val_loss(net.eval(), val, scale)
            if current < best[0]:
                best = (current, epoch, copy.deepcopy(net.state_dict()))
            elif epoch - best[1] >= schedule.patience:
                if log is None and epoch < schedule.epochs:
                    print(f" (early stop: best epoch {best[1]})", file=sys.stderr, flush=True)
                break
    facts: dict[str, Any] = {"epochs_run": epoch, "seconds": round(time.perf_counter() - t0, 1)}
    if best is not None:
        net.load_state_dict(best[2])
        facts.update(best_epoch=best[1], best_val_loss=round(best[0], 5))
    return net.eval(), facts


def torch_infer(net):
    """A LeadModel-compatible infer function running `net` with torch (no autograd)."""
    import torch

    def infer(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    return infer


def linear_infer(coef: np.ndarray):
    """A LeadModel-compatible infer function for the least-squares baseline."""
    def infer(x: np.ndarray) -> np.ndarray:
        return (np.einsum("oi,bil->bol", coef[:, :3], x.astype(np.float64)) + coef[:, 3][None, :, None]).astype(np.float32)

    return infer


def derive_decision(train: FitData) -> tuple[bool, float]:
    """(derive limb leads?, median Einthoven residual of the training windows)."""
    residual = float(np.median([einthoven_residual(y) for y in train.targets]))
    return residual < EINTHOVEN_TOLERANCE, residual


def einthoven_warnings(train_residual: float, test_residual: float | None) -> list[str]:
    """Warnings for records whose limb leads an electrocardiograph could not have recorded (III ≠ II − I):
    such leads are not one heart seen through electrodes, so a fit on them does not carry to real ECGs,
    and a test on them measures the generator, not the fit."""
    warnings = []
    if train_residual >= EINTHOVEN_TOLERANCE:
        warnings.append(f"the training records break Einthoven: RMS(III − (II − I)) is {train_residual:.2f} of lead II "
                        f"(an electrocardiograph's: ≈ 0), so they are not one heart seen through electrodes; the limb "
                        "leads are predicted instead of derived, and the fit will not carry to real ECGs")
    if test_residual is not None and test_residual >= EINTHOVEN_TOLERANCE and train_residual < EINTHOVEN_TOLERANCE:
        warnings.append(f"the --test records break Einthoven (RMS(III − (II − I)) is {test_residual:.2f} of lead II): "
                        "a model that derives III, aVR, aVL and aVF from I and II, as an electrocardiograph does, "
                        "cannot match theirs, so their r measures the records' source, not the fit")
    return warnings


def stable(facts: dict[str, Any]) -> dict[str, Any]:
    """The training facts that a rerun with the same seed repeats (not the seconds): what the ONNX metadata keeps."""
    return {k: v for k, v in facts.items() if k != "seconds"}


def export_fitted(net, output: str, derive: bool, fit_info: dict[str, Any]) -> str:
    """Write `net` as the zoo architecture's ONNX with its fit facts in the metadata; returns its sha256."""
    loaded = load_model(ZOO_MODEL)
    loaded.module = net
    loaded.sha256 = state_dict_sha256(net)
    loaded.meta.extra = {**(loaded.meta.extra or {}), "derive_limb_leads": derive, "fit": fit_info}
    return export_onnx(ZOO_MODEL, output, loaded=loaded).sha256


def model_geometry() -> tuple[tuple[str, ...], float, int]:
    """(input leads, rate Hz, window samples) of the zoo architecture that `fit` trains."""
    pre = dict(get_card(ZOO_MODEL).preprocessing)
    return tuple(pre["leads"]), float(pre["sample_rate_hz"]), int(pre["samples"])


def check_fit_options(init: str, epochs: int) -> None:
    """One-line errors for a bad --init or --epochs, before any work."""
    if init not in (ZOO_MODEL, "scratch"):
        raise UsageError(f"--init {init}: choose {ZOO_MODEL} or scratch")
    if epochs < 1:
        raise UsageError("--epochs must be ≥ 1")


def _reading(k: int, total: int) -> None:
    print(f"\rreading records {k}/{total}", end="" if k < total else "\n", file=sys.stderr, flush=True)


def load_all(paths: list[str], input_leads: tuple[str, ...], rate: float, samples: int) -> FitData:
    """Every window of every usable record under `paths` (a held-out test set)."""
    wins = []
    for path in collect_records(paths):
        try:
            wins += [(x, y, path.name) for x, y in record_windows(read_ecg(path), input_leads, rate, samples)]
        except DataError:
            continue
    if not wins:
        raise DataError(f"--test {' '.join(paths)}: no 12-lead record of ≥ {samples / rate:g} s")
    return FitData(np.stack([w[0] for w in wins]), np.stack([w[1] for w in wins]), [w[2] for w in wins])


def run_fit(paths: list[str], output: str, *, init: str = ZOO_MODEL, schedule: Schedule = Schedule(),
            val_split: float = 0.2, test: list[str] | None = None) -> dict[str, Any]:
    """Fit, validate (net and linear baseline), test on `test` records when given, and export the
    ONNX; returns the report fields.  The validation split also picks the epoch (early stopping);
    `test` is never seen while fitting."""
    check_fit_options(init, schedule.epochs)
    leads, rate, samples = model_geometry()
    t0 = time.perf_counter()
    records = collect_records(paths)
    train, val, skipped = load_split(records, val_split, schedule.seed, leads, rate, samples, progress=_reading)
    held_out = load_all(test, leads, rate, samples) if test else None
    if held_out is not None:
        _check_disjoint(train, held_out, "--test")
    derive, residual = derive_decision(train)
    coef = fit_linear(train)
    net, facts = train_net(train, coef, init=init, schedule=schedule, val=val)
    baseline = LeadModel(linear_infer(coef), leads, STANDARD_LEADS, rate, samples, derive_limb_leads=derive,
                         name="baseline_linear")
    fitted = LeadModel(torch_infer(net), leads, STANDARD_LEADS, rate, samples, derive_limb_leads=derive, name="model")
    validation = {"model": evaluate(fitted, val, leads, rate), "baseline_linear": evaluate(baseline, val, leads, rate)}
    fit_info = {"init": init, "epochs": schedule.epochs, "seed": schedule.seed, "train_records": len(set(train.records)),
                "val_records": len(set(val.records)), "einthoven_residual": residual, **stable(facts)}
    sha = export_fitted(net, output, derive, fit_info)
    report = {"onnx": str(output), "sha256": sha, "records": len(records), "skipped": skipped,
              "train": {"records": fit_info["train_records"], "windows": len(train.inputs), **facts},
              "validation_split": {"records": fit_info["val_records"], "windows": len(val.inputs)},
              "derive_limb_leads": derive, "einthoven_residual": residual, "validation": validation}
    test_residual = None
    if held_out is not None:
        test_residual = float(np.median([einthoven_residual(y) for y in held_out.targets]))
        report["test"] = {"records": len(set(held_out.records)), "windows": len(held_out.inputs),
                          "einthoven_residual": test_residual,
                          "model": evaluate(fitted, held_out, leads, rate),
                          "baseline_linear": evaluate(baseline, held_out, leads, rate)}
    report["warnings"] = einthoven_warnings(residual, test_residual)
    return {**report, "seconds": round(time.perf_counter() - t0, 1)}
