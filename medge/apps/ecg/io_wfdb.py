"""WFDB records in and out: leads by name in mV, NaN for missing samples, atomic writes.

`read_ecg` reads a record (``rec``, ``rec.hea`` or ``rec.dat``); bad files raise one-line
`DataError`s.  `write_ecg` writes a record at 1 µV resolution (format 24: the full int24 range of
the wire protocol); NaN samples are stored as WFDB's invalid value, so `wfdb.rdrecord` reads them
back as NaN.  Files are written to a temporary folder and moved into place, header last, so a
reader never sees a header without its data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medge.calibration.preprocess import to_millivolts
from medge.calibration.wfdb_source import record_names
from medge.errors import DataError
from medge.registry import import_optional

UV_GAIN = 1000.0  # ADC units per mV: 1 µV resolution


@dataclass
class EcgRecord:
    """Leads in mV, (leads, samples), with their names and sample rate."""

    leads: list[str]
    signal_mv: np.ndarray
    rate_hz: float
    name: str = ""

    def pick(self, wanted: list[str] | tuple[str, ...]) -> np.ndarray | None:
        """(len(wanted), samples) for the named leads (case/space-insensitive), None if any is missing."""
        keys = {_key(n): i for i, n in enumerate(self.leads)}
        idx = [keys.get(_key(w)) for w in wanted]
        if any(i is None for i in idx):
            return None
        return self.signal_mv[idx]


def _key(name: str) -> str:
    return str(name).replace(" ", "").replace("_", "").replace("-", "").lower()


def read_ecg(path: str | os.PathLike) -> EcgRecord:
    """Read one WFDB record; `DataError` names the problem for a missing or broken record."""
    wfdb = import_optional("wfdb", what="reading WFDB records")
    names = record_names(Path(path))
    if not names or not Path(f"{names[0]}.hea").is_file():
        raise DataError(f"{path} is not a WFDB record (no .hea header found); pass rec, rec.hea or a folder of records")
    record = names[0]
    try:
        rec = wfdb.rdrecord(str(record))
    except Exception as exc:  # noqa: BLE001 - wfdb raises many exception types for broken files
        detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read WFDB record {record.name}: {detail}; check the .hea/.dat pair") from None
    if rec.p_signal is None or rec.p_signal.size == 0:
        raise DataError(f"WFDB record {record.name} has no samples")
    units = rec.units or ["mV"] * rec.n_sig
    sig = np.stack([to_millivolts(rec.p_signal[:, i], units[i]) for i in range(rec.n_sig)])
    return EcgRecord(list(rec.sig_name), sig, float(rec.fs), record.name)


def write_ecg(path: str | os.PathLike, leads: list[str] | tuple[str, ...], signal_mv: np.ndarray, rate_hz: float,
              comments: list[str] | None = None) -> None:
    """Write (leads, samples) mV as WFDB record `path` (``path.hea`` + ``path.dat``), atomically."""
    wfdb = import_optional("wfdb", what="writing WFDB records")
    target = Path(path)
    if target.suffix in (".hea", ".dat"):
        target = target.with_suffix("")
    target.parent.mkdir(parents=True, exist_ok=True)
    sig = np.asarray(signal_mv, dtype=np.float64)
    limit = (2 ** 23 - 2) / UV_GAIN
    sig = np.where(np.isfinite(sig), np.clip(sig, -limit, limit), np.nan)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        wfdb.wrsamp(target.name, fs=float(rate_hz), units=["mV"] * len(leads), sig_name=list(leads), p_signal=sig.T,
                    fmt=["24"] * len(leads), adc_gain=[UV_GAIN] * len(leads), baseline=[0] * len(leads),
                    comments=comments or [], write_dir=str(tmp))
        os.replace(tmp / f"{target.name}.dat", target.with_name(f"{target.name}.dat"))
        os.replace(tmp / f"{target.name}.hea", target.with_name(f"{target.name}.hea"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
