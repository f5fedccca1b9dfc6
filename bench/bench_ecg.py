"""ECG app benchmark: a 60 s real-time pty stream, the offline rate, and the naive peer.

    PYTHONPATH=. python bench/bench_ecg.py [--seconds 60] [--hop 1] [--model ecg-3to12]
    PYTHONPATH=. python bench/bench_ecg.py --hop 0.25 --seconds 600   # the quarter-second goals

1. Live: `medge ecg simulate --realtime` on a pty, `medge ecg stream --hop H` reading it (`--threads`, default 2):
   reconstruct_ms p99 per window (goal ≤ 20 ms for the 10 s window of a 1 s hop, ≤ 10 ms for the
   2 s window of a hop under 1 s), sample-to-output latency p99 (goal ≤ hop + 50 ms), and drops
   (frames dropped, samples missing, windows skipped: goal 0).
2. Peers, in this process, interleaved with ours hop by hop over `--peer-seconds` of buffer: the
   naive stream re-filters and reconstructs the whole buffer on every hop; the full-window peer
   reconstructs the model's whole 10 s window every hop (the app before short windows); ours
   filters each new chunk once (stateful) and reconstructs one window of the live length.
   Printed as ms per hop, and the ratios.
3. Offline: `reconstruct_offline` on a 5-minute record, as × real time (goal ≥ 500×).

    PYTHONPATH=. python bench/bench_ecg.py --fit-table [--train-records 150 --test-records 40]

4. Fit table (instead of 1-3): `run_fit` (what `medge ecg fit` runs) from scratch on one generator's
   records, tested on the other generator's records: medge's dipole generator
   (`medge.calibration.synthetic.ecg`) and neurokit2's ``ecg_simulate(method="multileads")``.
   Per lead: Pearson r of the net and of the linear least-squares baseline on the held-out
   records of the other generator, and on the fitting generator's own validation records.
   First, how far each generator's limb leads are from an electrocardiograph's (Einthoven and
   Goldberger residuals): neurokit2's multilead ECGs scale each wave per lead from a fixed table,
   so their III is not II − I nor aVR −(I + II)/2, and they are not one heart seen through electrodes.

Timings on a shared machine are noisy; the ratios come from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _medge() -> list[str]:
    exe = shutil.which("medge")
    return [exe] if exe else [sys.executable, str(REPO / "medge_cli.py")]


def live(seconds: float, model: str, tmp: Path, hop: float, threads: int = 2) -> dict:
    """Real-time pty stream; returns the stream report."""
    link, report = tmp / "patch", tmp / "stream.json"
    sim = subprocess.Popen(_medge() + ["ecg", "simulate", "--port", f"pty:{link}", "--seconds", str(seconds + 3),
                                       "--realtime"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not link.is_symlink():
            time.sleep(0.05)
        proc = subprocess.run(_medge() + ["ecg", "stream", "--model", model, "--port", str(link), "--seconds",
                                          str(seconds), "--hop", str(hop), "--threads", str(threads), "--report", str(report)],
                              capture_output=True, text=True, timeout=seconds + 120, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"stream failed: {proc.stderr[-1000:]}")
    finally:
        sim.kill()
        sim.wait()
    return json.loads(report.read_text())


def peer_vs_ours(model, full, seconds: float, hop_s: float, rate: float = 500.0) -> dict:
    """ms per hop at the end of `seconds` of buffer: naive (whole buffer) and `full` (the model's
    whole window every hop) vs ours (`model`'s window)."""
    from medge.apps.ecg.filters import StreamFilter, filter_record
    from medge.apps.ecg.reconstruct import (
        InputWindow,
        StreamingReconstructor,
        reconstruct_offline,
    )
    from medge.apps.ecg.sources import synthetic_record

    rec = synthetic_record(seconds, 7)
    x = rec.pick(("II", "V1", "V5"))
    hop = round(hop_s * rate)
    filt, full_filt = StreamFilter(3, rate), StreamFilter(3, rate)
    window, full_window = InputWindow(model.samples, hop), InputWindow(full.samples, hop)
    recon, full_recon = StreamingReconstructor(model, rate, hop_s), StreamingReconstructor(full, rate, hop_s)
    ours, whole, naive = [], [], []
    for end in range(hop, x.shape[1] + 1, hop):
        t0 = time.perf_counter()
        window.push(end - hop, filt.process(x[:, end - hop:end].T), time.perf_counter())
        recon.step(window.snapshot())
        ours.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        full_window.push(end - hop, full_filt.process(x[:, end - hop:end].T), time.perf_counter())
        full_recon.step(full_window.snapshot())
        whole.append((time.perf_counter() - t0) * 1e3)
        if end % (10 * hop) == 0 or end == x.shape[1]:  # the naive peer at every 10th hop (it is slow)
            t0 = time.perf_counter()
            reconstruct_offline(model, filter_record(x[:, :end], rate), rate)
            naive.append(((end // hop), (time.perf_counter() - t0) * 1e3))
    return {"ours_ms_per_hop_p50": float(np.median(ours[5:])), "ours_ms_per_hop_p99": float(np.percentile(ours[5:], 99)),
            "full_window_ms_per_hop_p50": float(np.median(whole[5:])),
            "full_window_ms_per_hop_p99": float(np.percentile(whole[5:], 99)),
            "naive_ms_per_hop_at_end": naive[-1][1], "naive_by_hops": naive}


def offline(model, minutes: float = 5.0, rate: float = 500.0) -> float:
    """× real time of filter + reconstruct_offline on a `minutes` record."""
    from medge.apps.ecg.filters import filter_record
    from medge.apps.ecg.reconstruct import reconstruct_offline
    from medge.apps.ecg.sources import synthetic_record

    x = synthetic_record(minutes * 60, 3).pick(("II", "V1", "V5"))
    reconstruct_offline(model, filter_record(x[:, :10000], rate), rate)  # warm-up
    t0 = time.perf_counter()
    reconstruct_offline(model, filter_record(x, rate), rate)
    return minutes * 60 / (time.perf_counter() - t0)


LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def write_records(kind: str, n: int, seed: int, folder: Path) -> Path:
    """`n` 10 s 12-lead WFDB records at 500 Hz from the dipole generator or neurokit2 (multileads)."""
    from medge.apps.ecg.io_wfdb import write_ecg
    from medge.apps.ecg.sources import synthetic_record

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        if kind == "dipole":
            rec = synthetic_record(10, seed + k)
            write_ecg(folder / f"d{k:03d}", rec.leads, rec.signal_mv, 500.0)
            continue
        import neurokit2 as nk

        df = nk.ecg_simulate(duration=10, sampling_rate=500, method="multileads",
                             heart_rate=float(rng.uniform(55, 100)), heart_rate_std=float(rng.uniform(0.5, 3)),
                             noise=float(rng.uniform(0.005, 0.03)), random_state=seed + k)
        write_ecg(folder / f"nk{k:03d}", list(LEAD_NAMES), df[list(LEAD_NAMES)].values.T.astype(np.float64), 500.0)
    return folder


def lead_consistency(folder: Path) -> dict[str, float]:
    """Median over the records in `folder` of how far their limb leads are from what an electrocardiograph
    forms from three limb electrodes: Einthoven RMS(III − (II − I)) and Goldberger RMS(aVR + (I + II)/2),
    both relative to RMS(II).  ≈ 0 for a real ECG (and medge's generator); a generator far from 0 does
    not describe one heart seen through electrodes, so no 3 → 12 reconstruction fitted elsewhere can
    match its leads."""
    from medge.apps.ecg.io_wfdb import read_ecg
    from medge.apps.ecg.reconstruct import einthoven_residual

    einthoven, goldberger = [], []
    for header in sorted(folder.glob("*.hea")):
        leads = read_ecg(header.with_suffix("")).pick(LEAD_NAMES).astype(np.float64)
        einthoven.append(einthoven_residual(leads))
        i, ii, avr = leads[0], leads[1], leads[3]
        goldberger.append(float(np.sqrt(np.mean((avr + (i + ii) / 2) ** 2)) / np.sqrt(np.mean(ii ** 2))))
    return {"einthoven_residual": float(np.median(einthoven)), "goldberger_aVR_residual": float(np.median(goldberger))}


def fit_table(n_train: int, n_test: int, epochs: int, tmp: Path, data: Path | None = None) -> dict:
    """Fit from scratch on each generator, test on the other; per-lead r of net and linear."""
    from medge.apps.ecg.fit import Schedule, run_fit

    root = data or tmp
    folders = {}
    for kind, seeds in (("dipole", (5000, 9000)), ("neurokit2", (3000, 1000))):
        for split, n, seed in (("train", n_train, seeds[0]), ("test", n_test, seeds[1])):
            folder = root / f"{kind}_{split}"
            if not (folder.is_dir() and len(list(folder.glob("*.hea"))) >= n):
                write_records(kind, n, seed, folder)
            folders[kind, split] = folder
    table: dict = {"lead_consistency": {kind: lead_consistency(folders[kind, "test"]) for kind in ("dipole", "neurokit2")}}
    for fit_on, test_on in (("dipole", "neurokit2"), ("neurokit2", "dipole")):
        r = run_fit([str(folders[fit_on, "train"])], str(tmp / f"fit-{fit_on}.onnx"), init="scratch",
                    schedule=Schedule(epochs, 0, patience=3), test=[str(folders[test_on, "test"])])
        table[f"fit {fit_on} -> test {test_on}"] = {
            "train": r["train"], "test_records": r["test"]["records"],
            "derive_limb_leads": r["derive_limb_leads"], "warnings": r["warnings"],
            "test": {w: {lead: r["test"][w]["per_lead"][lead]["pearson_r"] for lead in LEAD_NAMES}
                     | {"mean": r["test"][w]["mean_pearson_r"]} for w in ("model", "baseline_linear")},
            "validation": {w: {lead: r["validation"][w]["per_lead"][lead]["pearson_r"] for lead in LEAD_NAMES}
                           | {"mean": r["validation"][w]["mean_pearson_r"]} for w in ("model", "baseline_linear")}}
    return table


def print_fit_table(table: dict) -> None:
    """One block per direction: per lead, net / linear on the other generator and on the own validation."""
    for kind, c in table["lead_consistency"].items():
        print(f"{kind}: limb leads vs an electrocardiograph's (relative to RMS of II): Einthoven residual "
              f"{c['einthoven_residual']:.3f}, Goldberger aVR residual {c['goldberger_aVR_residual']:.3f}")
    for title, t in table.items():
        if title == "lead_consistency":
            continue
        print(f"{title} (train {t['train']}, {t['test_records']} test records; mean over the non-input leads)")
        for line in t["warnings"]:
            print(f"  warning: {line}")
        print(f"  {'lead':5} {'net':>7} {'linear':>7}   {'own-val net':>11} {'linear':>7}")
        for lead in (*LEAD_NAMES, "mean"):
            te, va = t["test"], t["validation"]
            print(f"  {lead:5} {te['model'][lead]:7.3f} {te['baseline_linear'][lead]:7.3f}   "
                  f"{va['model'][lead]:11.3f} {va['baseline_linear'][lead]:7.3f}")


def main() -> None:
    """Run the three measurements and print them with the goals and the peer ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hop", type=float, default=1.0, help="seconds between reconstructions (0.25: the quarter-second goals)")
    parser.add_argument("--threads", type=int, default=2, help="inference threads of the live stream and the peers")
    parser.add_argument("--peer-seconds", type=float, default=60.0, help="seconds of buffer for the peers")
    parser.add_argument("--model", default="ecg-3to12")
    parser.add_argument("--fit-table", action="store_true", help="only the cross-generator fit table")
    parser.add_argument("--train-records", type=int, default=150)
    parser.add_argument("--test-records", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--data", type=Path, help="--fit-table: keep the generated records here (reused)")
    args = parser.parse_args()
    if args.fit_table:
        with tempfile.TemporaryDirectory() as tmp:
            table = fit_table(args.train_records, args.test_records, args.epochs, Path(tmp), args.data)
        print_fit_table(table)
        print(json.dumps(table, indent=2))
        return
    from medge.apps.ecg.ecg_model import load_lead_model
    from medge.commands.ecg import SHORT_WINDOW_S

    short = round(SHORT_WINDOW_S * 500) if args.hop < 1 else None  # what `medge ecg stream` picks for a zoo model
    with tempfile.TemporaryDirectory() as tmp:
        full, full_app = load_lead_model(args.model, threads=args.threads)  # exports the zoo model to the cache first
        model, app = load_lead_model(args.model, threads=args.threads, samples=short)
        r = live(args.seconds, args.model, Path(tmp), args.hop, args.threads)
        peer = peer_vs_ours(model, full, args.peer_seconds, args.hop)
        xrt = offline(full)
        app.close()
        full_app.close()
    hop_ms = r["hop_s"] * 1000
    rec_goal = 10.0 if args.hop < 1 else 20.0
    lat_goal = 300.0 if args.hop <= 0.25 else hop_ms + 50
    # a drop loses a sample; a snapshot merged into the next under load (windows.skipped) loses none
    drops = {"frames_dropped": r["frames"]["dropped"], "samples_missing": r["samples"]["missing"],
             "samples_not_reconstructed": r["windows"]["skipped_samples"]}
    out = {
        "live": {"seconds": args.seconds, "hop_s": args.hop, "window_samples": r["model"]["input"][-1],
                 "reconstruct_ms_p99": r["reconstruct_ms"]["p99"], "reconstruct_ms_p50": r["reconstruct_ms"]["p50"],
                 "reconstruct_goal_ms": rec_goal, "latency_ms_p50": r["latency_ms"]["p50"],
                 "latency_ms_p99": r["latency_ms"]["p99"], "latency_goal_ms": lat_goal, "drops": drops,
                 "windows": r["windows"], "frames": r["frames"]},
        "peer": peer, "peer_ratio_naive_over_ours": peer["naive_ms_per_hop_at_end"] / peer["ours_ms_per_hop_p50"],
        "peer_ratio_full_window_over_ours": peer["full_window_ms_per_hop_p50"] / peer["ours_ms_per_hop_p50"],
        "offline_x_realtime": xrt, "cpu_count": os.cpu_count(), "threads": args.threads,
    }
    ok = lambda good: "met" if good else "MISSED"  # noqa: E731
    lv = out["live"]
    print(f"live {args.seconds:g} s pty stream, hop {args.hop:g} s, window {lv['window_samples']} samples:")
    print(f"  reconstruct_ms p99 {lv['reconstruct_ms_p99']:.1f} (goal ≤ {rec_goal:g}: "
          f"{ok(lv['reconstruct_ms_p99'] <= rec_goal)})")
    print(f"  sample-to-output p99 {lv['latency_ms_p99']:.0f} ms (goal ≤ {lat_goal:.0f}: "
          f"{ok(lv['latency_ms_p99'] <= lat_goal)})")
    print(f"  drops {drops} (goal 0: {ok(not any(drops.values()))}); {r['windows']['reconstructed']} windows, "
          f"{r['windows']['skipped']} snapshot(s) merged into the next under load")
    print(f"per hop after {args.peer_seconds:g} s: ours {peer['ours_ms_per_hop_p50']:.2f} ms, full-window peer "
          f"{peer['full_window_ms_per_hop_p50']:.2f} ms ({out['peer_ratio_full_window_over_ours']:.1f}× ours), naive peer "
          f"{peer['naive_ms_per_hop_at_end']:.1f} ms ({out['peer_ratio_naive_over_ours']:.1f}× ours)")
    print(f"offline: {xrt:.0f}× real time (goal ≥ 500×)")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
