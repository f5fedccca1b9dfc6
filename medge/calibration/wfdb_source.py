"""WFDB records (PhysioNet format): pick leads by name, convert to mV, resample, window.

A source is one record (``path/rec``, ``path/rec.hea`` or ``.dat``) or a folder of records.  Each
record is cut into non-overlapping windows of the model's sample count at the model's rate; each
window is one candidate.  For ECG reconstruction models whose labels are lead names, the record's
matching leads become the target (in mV, unscaled).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import numpy as np

from medge.calibration.preprocess import resample_signal, signal_to_model, to_millivolts
from medge.calibration.sampling import Candidate, SkipSample, error_detail
from medge.common.errors import DataError
from medge.common.metadata import ModelMeta
from medge.common.registry import import_optional


def _lead_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name)).lower()


def record_names(source: Path) -> list[Path]:
    """Record paths (without suffix) for a record or a folder of records."""
    if source.is_dir():
        return sorted(p.with_suffix("") for p in source.rglob("*.hea") if not p.name.startswith("."))
    if source.suffix.lower() in (".hea", ".dat", ".mat"):
        return [source.with_suffix("")]
    if Path(f"{source}.hea").is_file():
        return [source]
    return []


def is_wfdb_source(source: Path) -> bool:
    """Whether `source` is a WFDB record or a folder that holds at least one."""
    if source.is_dir():
        return next(source.rglob("*.hea"), None) is not None
    return bool(record_names(source)) and Path(f"{record_names(source)[0]}.hea").is_file()


def _lead_indices(available: list[str], wanted: list[str]) -> list[int] | None:
    keys = {_lead_key(n): i for i, n in enumerate(available)}
    idx = [keys.get(_lead_key(w)) for w in wanted]
    return None if any(i is None for i in idx) else [int(i) for i in idx]


@functools.lru_cache(maxsize=4)
def _read_record_mv(record: str, leads: tuple[str, ...], rate_out: float) -> np.ndarray:
    """(len(leads), samples) in mV at `rate_out` for the named leads of a record."""
    wfdb = import_optional("wfdb", what="reading WFDB records")
    try:
        rec = wfdb.rdrecord(record)
    except Exception as exc:  # noqa: BLE001 - wfdb raises many types for broken records
        raise SkipSample(f"cannot read WFDB record ({error_detail(exc, record)})") from exc
    idx = _lead_indices(list(rec.sig_name), list(leads))
    if idx is None:
        raise SkipSample(f"record lacks leads {list(leads)}")
    sig = np.stack([to_millivolts(rec.p_signal[:, i], rec.units[i]) for i in idx])
    if np.isnan(sig).any():  # resampling would smear missing samples over their neighbours
        return np.stack([_resample_keep_nan(s, float(rec.fs), rate_out) for s in sig])
    return resample_signal(sig, float(rec.fs), rate_out)


def _resample_keep_nan(lead: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    """Resample a lead; output samples near a missing input sample stay NaN."""
    filled = resample_signal(np.nan_to_num(lead)[None], rate_in, rate_out)[0]
    mask = resample_signal(np.isnan(lead).astype(np.float64)[None], rate_in, rate_out)[0]
    filled[np.abs(mask) > 1e-3] = np.nan
    return filled


def wfdb_candidates(source: Path, meta: ModelMeta | None, pre: dict[str, Any], *, root: Path
                    ) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """One candidate per model-sized window of every record; records without the leads are skipped.

    Raises `DataError` when no record has the model's leads (naming the leads the data has).
    """
    wfdb = import_optional("wfdb", what="reading WFDB records")
    wanted = [str(x) for x in pre.get("leads", [])]
    rate_out, samples = float(pre["sample_rate_hz"]), int(pre["samples"])
    target_leads = [str(x) for x in (meta.labels if meta and meta.task == "ecg-reconstruction" else [])]
    candidates: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    lead_problems: list[str] = []
    for record in record_names(source):
        item = record.relative_to(root).as_posix() if record.is_relative_to(root) else record.name
        try:
            header = wfdb.rdheader(str(record))
        except Exception as exc:  # noqa: BLE001 - unreadable header: skip the record
            skipped.append((item, f"cannot read WFDB header ({error_detail(exc, record)})"))
            continue
        names = list(header.sig_name or [])
        if not wanted:
            wanted = names
        if _lead_indices(names, wanted) is None:
            missing = [w for w in wanted if _lead_indices(names, [w]) is None]
            reason = f"record has no lead(s) {', '.join(missing)}; it has {', '.join(names)}"
            lead_problems.append(reason)
            skipped.append((item, reason))
            continue
        with_targets = bool(target_leads) and _lead_indices(names, target_leads) is not None
        n_windows = int(int(header.sig_len or 0) * rate_out / float(header.fs)) // samples
        if n_windows == 0:
            skipped.append((item, f"record is shorter than one model window ({samples} samples at {rate_out:g} Hz)"))
            continue
        for w in range(n_windows):
            candidates.append(Candidate(f"{item}@{w * samples / rate_out:g}s",
                                        _window_loader(str(record), tuple(wanted), tuple(target_leads) if with_targets
                                                       else (), rate_out, w * samples, samples, pre)))
    if not candidates and lead_problems:
        raise DataError(f"no WFDB record in {source.name} has the model's leads {', '.join(wanted)} "
                        f"({lead_problems[0]}); use records with these lead names")
    return candidates, skipped


def _window_loader(record: str, leads: tuple[str, ...], target_leads: tuple[str, ...], rate_out: float,
                   start: int, samples: int, pre: dict[str, Any]):
    def load() -> tuple[np.ndarray, np.ndarray | None]:
        window = _read_record_mv(record, leads, rate_out)[:, start:start + samples]
        if window.shape[1] < samples:
            raise SkipSample("window runs past the end of the record")
        if np.isnan(window).any():
            raise SkipSample("window contains missing (NaN) samples")
        target = None
        if target_leads:
            target = _read_record_mv(record, target_leads, rate_out)[:, start:start + samples].astype(np.float32)
            if np.isnan(target).any():
                raise SkipSample("target leads contain missing (NaN) samples")
        return signal_to_model(window, pre), target

    return load
