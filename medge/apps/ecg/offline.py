"""`medge ecg reconstruct`: 3 leads of a recorded ECG → 12 leads, written as WFDB or NPZ (and DICOM, PNG).

Every output says which leads were measured and which computed, by which model (name and sha256),
and "not for diagnosis" (`medge.apps.ecg.provenance`).  When the input record also has the leads
the model computes, each is scored against it (Pearson r, RMSE), the plot overlays the recorded
lead on the computed one, and every computed lead with r < `R_WARN` is a warning in the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medge.apps.ecg.provenance import Provenance
from medge.apps.ecg.reconstruct import (
    R_WARN,
    STANDARD_LEADS,
    LeadModel,
    mean_r,
    reconstruct_offline,
)
from medge.common.errors import DataError
from medge.evaluate.metrics import ecg_per_lead
from medge.common.fileio import atomic_path
from medge.apps.ecg.filters import filter_record
from medge.apps.ecg.io_dicom import write_dicom_ecg
from medge.apps.ecg.io_wfdb import write_ecg
from medge.apps.ecg.plot import paper_plot
from medge.apps.ecg.sources import read_input
from medge.calibration.preprocess import resample_signal


def write_output(out: Path, signal_mv: np.ndarray, rate_hz: float, provenance: Provenance) -> None:
    """(12, N) mV as a WFDB record `out`, or as an NPZ when `out` ends in ``.npz``, with the provenance."""
    if out.suffix.lower() != ".npz":
        write_ecg(out, STANDARD_LEADS, signal_mv, rate_hz, comments=provenance.comments())
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, signal=signal_mv, leads=np.array(STANDARD_LEADS), rate_hz=float(rate_hz),
                 **{k: np.asarray(v) for k, v in provenance.npz_keys().items()})


def low_r_warnings(per_lead: dict[str, dict[str, float]], provenance: Provenance, record: str) -> list[str]:
    """One line per computed lead whose r against the recorded lead is below `R_WARN` (or undefined)."""
    out = []
    for lead in provenance.computed:
        r = per_lead[lead]["pearson_r"]
        if not r >= R_WARN:
            shown = "undefined" if r != r else f"{r:.2f}"
            out.append(f"{record}: lead {lead} (computed) has r = {shown} against the recorded lead (< {R_WARN:g}); "
                       "the reconstruction does not match this recording there")
    return out


def reconstruct_record(path: Path, out: Path, model: LeadModel, provenance: Provenance, *,
                       mains: float | None = None, dicom: str | None = None, plot: str | None = None
                       ) -> dict[str, Any]:
    """Reconstruct one input file; write `out` (and `dicom`, `plot`); return its report entry."""
    rec, ds = read_input(path)
    inputs = rec.pick(model.input_leads)
    if inputs is None:
        raise DataError(f"{path.name} has leads {', '.join(rec.leads)}; the model needs {', '.join(model.input_leads)}")
    rate = model.rate_hz
    x = filter_record(resample_signal(inputs, rec.rate_hz, rate), rate, mains)
    if not np.isfinite(x).any():
        raise DataError(f"{path.name}: every input sample is missing; nothing to reconstruct")
    t0 = time.perf_counter()
    y = reconstruct_offline(model, x, rate)
    seconds = time.perf_counter() - t0
    write_output(out, y, rate, provenance)
    result: dict[str, Any] = {"record": rec.name, "samples": int(y.shape[1]), "rate_hz": rate,
                              "x_realtime": (y.shape[1] / rate) / seconds if seconds > 0 else None,
                              "written": str(out), "warnings": []}
    reference = rec.pick(STANDARD_LEADS)
    ref = None
    if reference is not None:
        ref = filter_record(resample_signal(reference, rec.rate_hz, rate), rate, mains)
        per_lead = ecg_per_lead(y, ref, STANDARD_LEADS)
        result["per_lead"] = per_lead
        result["mean_pearson_r"] = mean_r(per_lead, model.input_leads)
        result["warnings"] = low_r_warnings(per_lead, provenance, rec.name)
    if dicom:
        write_dicom_ecg(dicom, STANDARD_LEADS, y, rate, provenance=provenance, source=ds)
        result["dicom"] = dicom
    if plot:
        scores = {lead: result["per_lead"][lead]["pearson_r"] for lead in provenance.computed} if ref is not None else {}
        paper_plot(plot, STANDARD_LEADS, y, rate, title=f"medge ecg reconstruct ({model.name}), not for diagnosis",
                   reconstructed=provenance.reconstructed, derived=provenance.derived, reference=ref, scores=scores)
        result["plot"] = plot
    return result


def reconstruct_inputs(paths: list[Path], output: Path, folder: bool, model: LeadModel, provenance: Provenance, *,
                       mains: float | None = None, dicom: str | None = None, plot: str | None = None,
                       progress: Callable[[int, int], None] = lambda _k, _n: None) -> dict[str, Any]:
    """Reconstruct every input (the plot of the first only); the report's data without the model block."""
    records = []
    for k, path in enumerate(paths):
        out = output / path.name if folder else output
        records.append(reconstruct_record(path, out, model, provenance, mains=mains, dicom=dicom,
                                          plot=plot if k == 0 else None))
        progress(k + 1, len(paths))
    data: dict[str, Any] = {"provenance": provenance.to_dict()}
    if not folder:
        return {**data, **records[0]}
    data["records"] = records
    data["warnings"] = [w for r in records for w in r["warnings"]]
    scored = [r for r in records if "per_lead" in r]
    if scored:
        data["per_lead"] = {lead: {m: float(np.nanmean([r["per_lead"][lead][m] for r in scored]))
                                   for m in ("pearson_r", "rmse_uv")} for lead in scored[0]["per_lead"]}
        data["mean_pearson_r"] = float(np.nanmean([r["mean_pearson_r"] for r in scored]))
    return data
