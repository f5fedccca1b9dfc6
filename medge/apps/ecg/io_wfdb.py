"""WFDB records in and out: leads by name in mV, NaN for missing samples, atomic writes.

`read_ecg` reads a record (``rec``, ``rec.hea`` or ``rec.dat``); bad files raise one-line
`DataError`s.  `write_ecg` writes a record at 1 µV resolution (format 24: the full int24 range of
the wire protocol); NaN samples are stored as WFDB's invalid value, so `wfdb.rdrecord` reads them
back as NaN.  Files are written to a temporary folder and moved into place, header last, so a
reader never sees a header without its data.  `GrowingRecord` writes a record that stays valid
while it grows (a live session's ``--record``): samples are appended to the ``.dat`` and fsynced,
then the header with the new length is written atomically, so after a crash the record holds
everything up to its last checkpoint.
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
from medge.common.errors import DataError
from medge.common.registry import import_optional

UV_GAIN = 1000.0  # ADC units per mV: 1 µV resolution
INVALID_24 = -(2 ** 23)  # WFDB's invalid sample in format 24 (rdrecord reads it as NaN)


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
    sig = _clip(signal_mv)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        wfdb.wrsamp(target.name, fs=float(rate_hz), units=["mV"] * len(leads), sig_name=list(leads), p_signal=sig.T,
                    fmt=["24"] * len(leads), adc_gain=[UV_GAIN] * len(leads), baseline=[0] * len(leads),
                    comments=comments or [], write_dir=str(tmp))
        os.replace(tmp / f"{target.name}.dat", target.with_name(f"{target.name}.dat"))
        os.replace(tmp / f"{target.name}.hea", target.with_name(f"{target.name}.hea"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _clip(signal_mv: np.ndarray) -> np.ndarray:
    """mV clipped to what format 24 holds at 1 µV (NaN stays NaN)."""
    sig = np.asarray(signal_mv, dtype=np.float64)
    limit = (2 ** 23 - 2) / UV_GAIN
    return np.where(np.isfinite(sig), np.clip(sig, -limit, limit), np.nan)


def _counts(signal_mv: np.ndarray) -> np.ndarray:
    """(leads, n) mV → (n, leads) int64 format-24 counts, NaN as the invalid value."""
    sig = _clip(signal_mv)
    return np.where(np.isfinite(sig), np.round(np.nan_to_num(sig) * UV_GAIN), INVALID_24).astype(np.int64).T


class GrowingRecord:
    """A WFDB record (format 24, 1 µV) that is valid on disk after every `append`.

    The first `append` creates ``path.dat`` and ``path.hea``; each one appends its samples to the
    ``.dat``, fsyncs it, and then replaces the header (sample count, checksums, comments) atomically.
    A crash at any moment leaves a header that describes a prefix of the ``.dat``: `wfdb.rdrecord`
    reads everything up to the last completed `append`.
    """

    def __init__(self, path: str | os.PathLike, leads: list[str] | tuple[str, ...], rate_hz: float) -> None:
        import_optional("wfdb", what="writing WFDB records")
        target = Path(path)
        self.path = target.with_suffix("") if target.suffix in (".hea", ".dat") else target
        self.leads, self.rate_hz = list(leads), float(rate_hz)
        self.samples = 0
        self._init: list[int] = []
        self._sums = np.zeros(len(self.leads), dtype=np.int64)
        self._fh = None

    def append(self, signal_mv: np.ndarray, comments: list[str]) -> None:
        """Append (leads, n) mV (NaN where missing) and commit the record with `comments`."""
        counts = _counts(signal_mv)
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path.with_name(f"{self.path.name}.dat"), "wb")
        if len(counts):
            if not self._init:
                self._init = [int(v) for v in counts[0]]
            self._fh.write(np.ascontiguousarray(counts, dtype="<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes())
            self._sums += counts.sum(axis=0)
            self.samples += len(counts)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._write_header(comments)

    def close(self) -> None:
        """Close the data file (the record on disk is already complete)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _write_header(self, comments: list[str]) -> None:
        wfdb = import_optional("wfdb", what="writing WFDB records")
        n = len(self.leads)
        checksum = [int((v + 32768) % 65536 - 32768) for v in self._sums]
        record = wfdb.Record(record_name=self.path.name, n_sig=n, fs=self.rate_hz, sig_len=self.samples,
                             file_name=[f"{self.path.name}.dat"] * n, fmt=["24"] * n, adc_gain=[UV_GAIN] * n,
                             baseline=[0] * n, units=["mV"] * n, adc_res=[24] * n, adc_zero=[0] * n,
                             init_value=self._init or [0] * n, checksum=checksum, block_size=[0] * n,
                             sig_name=self.leads, comments=list(comments))
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        try:
            record.wrheader(write_dir=str(tmp))
            with open(tmp / f"{self.path.name}.hea", "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp / f"{self.path.name}.hea", self.path.with_name(f"{self.path.name}.hea"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
