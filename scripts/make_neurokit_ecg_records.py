"""Write 12-lead WFDB records from neurokit2's `ecg_simulate(method="multileads")`.

An ECG source that medge did not write (its own dipole generator lives in
medge.calibration.synthetic.ecg), used to check that `medge ecg fit` generalises::

    python scripts/make_neurokit_ecg_records.py OUT --train 200 --eval 100 --seconds 10

Each record gets its own heart rate (50-110 bpm), heart-rate variability, noise level and seed;
train and eval records use disjoint seeds.  Signals are written in mV at 500 Hz.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def write_records(folder: Path, count: int, first_seed: int, seconds: float, rate: int = 500) -> None:
    """Write `count` records named nk_<seed> into `folder`."""
    import neurokit2 as nk
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        seed = first_seed + k
        rng = np.random.default_rng(seed)
        name = f"nk_{seed:05d}"
        if (folder / f"{name}.hea").is_file():
            continue
        df = nk.ecg_simulate(duration=seconds, sampling_rate=rate, heart_rate=float(rng.uniform(50, 110)),
                             heart_rate_std=float(rng.uniform(0.5, 4.0)), noise=float(rng.uniform(0.005, 0.05)),
                             method="multileads", random_state=seed)
        sig = df[LEADS].to_numpy(dtype=np.float64)
        wfdb.wrsamp(name, fs=rate, units=["mV"] * 12, sig_name=LEADS, p_signal=sig, fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder))
        print(f"\r{folder.name}: {k + 1}/{count}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--eval", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    write_records(args.out / "train", args.train, 1000, args.seconds)
    write_records(args.out / "eval", args.eval, 50000, args.seconds)


if __name__ == "__main__":
    main()
