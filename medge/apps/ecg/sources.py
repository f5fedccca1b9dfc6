"""ECG inputs by path: a WFDB record, a DICOM ECG waveform, an NPZ, or the synthetic generator.

An NPZ holds ``signal`` (leads, samples) in mV, ``leads`` (names) and ``rate_hz``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medge.apps.ecg.io_dicom import is_dicom_file, read_dicom_ecg
from medge.apps.ecg.io_wfdb import EcgRecord, read_ecg
from medge.apps.ecg.protocol import LEADS
from medge.calibration.wfdb_source import record_names
from medge.common.errors import DataError
from medge.calibration.preprocess import resample_signal
from medge.calibration.synthetic.ecg import FS_HZ, STANDARD_LEADS, generate_ecg

SYNTHETIC = "synthetic"


def synthetic_record(seconds: float, seed: int) -> EcgRecord:
    """A 12-lead record from medge's dipole generator (500 Hz, mV)."""
    samples = max(1, round(seconds * FS_HZ))
    _, leads = generate_ecg(1, np.random.default_rng(seed), samples=samples)
    return EcgRecord(list(STANDARD_LEADS), leads[0].astype(np.float64), float(FS_HZ), f"synthetic-{seed}")


def patch_samples(source: str, seconds: float, seed: int, rate_hz: float) -> tuple[str, np.ndarray]:
    """(record name, (n, 3) int32 µV of II, V1, V5 at `rate_hz`): what a patch sends for `seconds`,
    the source looped."""
    rec = synthetic_record(seconds, seed) if source == SYNTHETIC else read_input(source)[0]
    leads = rec.pick(LEADS)
    if leads is None:
        raise DataError(f"source {rec.name} has leads {', '.join(rec.leads)}; the patch sends {', '.join(LEADS)}")
    sig = resample_signal(np.nan_to_num(leads), rec.rate_hz, rate_hz)
    n = round(seconds * rate_hz)
    sig = np.tile(sig, (1, int(np.ceil(n / sig.shape[1]))))[:, :n]
    return rec.name, np.round(sig.T * 1000.0).astype(np.int32)


def read_npz(path: Path) -> EcgRecord:
    """An NPZ with ``signal``, ``leads`` and ``rate_hz``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("signal", "leads", "rate_hz") if k not in data]
            if missing:
                raise DataError(f"{path.name} lacks {', '.join(missing)}; an ECG NPZ holds signal (leads, samples) "
                                "in mV, leads and rate_hz")
            sig, leads, rate = np.asarray(data["signal"], dtype=np.float64), [str(x) for x in data["leads"]], float(data["rate_hz"])
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path.name} as NPZ ({str(exc).splitlines()[0][:100]})") from None
    if sig.ndim != 2 or sig.shape[0] != len(leads):
        raise DataError(f"{path.name}: signal has shape {sig.shape} for {len(leads)} lead names; expected (leads, samples)")
    return EcgRecord(leads, sig, rate, path.stem)


def read_input(path: str | Path) -> tuple[EcgRecord, object | None]:
    """(record, DICOM dataset or None) for one input path."""
    p = Path(path)
    if p.suffix.lower() == ".npz":
        return read_npz(p), None
    if p.is_file() and p.suffix.lower() not in (".hea", ".dat") and is_dicom_file(p):
        return read_dicom_ecg(p)
    if record_names(p):
        return read_ecg(p), None
    if not p.exists() and not Path(f"{p}.hea").exists():
        raise DataError(f"{path} does not exist; pass a WFDB record, a DICOM ECG (.dcm) or an NPZ")
    raise DataError(f"{path} is not a WFDB record, DICOM ECG waveform or NPZ")


def input_paths(path: str | Path) -> list[Path]:
    """One path, or the WFDB records inside a folder."""
    p = Path(path)
    if p.is_dir():
        names = record_names(p)
        if not names:
            raise DataError(f"folder {path} holds no WFDB records (.hea)")
        return names
    return [p]
