"""ECG app benchmark: a 60 s real-time pty stream, the offline rate, and the naive peer.

    PYTHONPATH=. python bench/bench_ecg.py [--seconds 60] [--model ecg-3to12]

1. Live: `medge ecg simulate --realtime` on a pty, `medge ecg stream` reading it (2 threads):
   reconstruct_ms p99 per 10 s window (goal ≤ 20 ms) and sample-to-output latency p99
   (goal ≤ hop + 50 ms).
2. Peer, in this process, interleaved with ours hop by hop: the naive stream re-filters and
   reconstructs the whole buffer on every hop; ours filters each new chunk once (stateful) and
   reconstructs one window.  Printed as ms per hop after 60 s of buffer, and the ratio.
3. Offline: `reconstruct_offline` on a 5-minute record, as × real time (goal ≥ 500×).

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


def live(seconds: float, model: str, tmp: Path) -> dict:
    """Real-time pty stream; returns the stream report."""
    link, report = tmp / "patch", tmp / "stream.json"
    sim = subprocess.Popen(_medge() + ["ecg", "simulate", "--port", f"pty:{link}", "--seconds", str(seconds + 3),
                                       "--realtime"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not link.is_symlink():
            time.sleep(0.05)
        proc = subprocess.run(_medge() + ["ecg", "stream", "--model", model, "--port", str(link), "--seconds",
                                          str(seconds), "--threads", "2", "--report", str(report)],
                              capture_output=True, text=True, timeout=seconds + 120, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"stream failed: {proc.stderr[-1000:]}")
    finally:
        sim.kill()
        sim.wait()
    return json.loads(report.read_text())


def peer_vs_ours(model, seconds: float, rate: float = 500.0) -> dict:
    """ms per hop at the end of `seconds` of buffer: naive (whole buffer) vs ours (one window)."""
    from medge.apps.ecg.filters import StreamFilter, filter_record
    from medge.apps.ecg.reconstruct import (
        InputWindow,
        StreamingReconstructor,
        reconstruct_offline,
    )
    from medge.apps.ecg.sources import synthetic_record

    rec = synthetic_record(seconds, 7)
    x = rec.pick(("II", "V1", "V5"))
    hop = int(rate)
    filt = StreamFilter(3, rate)
    window = InputWindow(model.samples, hop)
    recon = StreamingReconstructor(model, rate, 1.0)
    ours, naive = [], []
    for end in range(hop, x.shape[1] + 1, hop):
        t0 = time.perf_counter()
        window.push(end - hop, filt.process(x[:, end - hop:end].T), time.perf_counter())
        recon.step(window.snapshot())
        ours.append((time.perf_counter() - t0) * 1e3)
        if end % (10 * hop) == 0 or end == x.shape[1]:  # the naive peer at every 10th hop (it is slow)
            t0 = time.perf_counter()
            reconstruct_offline(model, filter_record(x[:, :end], rate), rate)
            naive.append(((end // hop), (time.perf_counter() - t0) * 1e3))
    return {"ours_ms_per_hop_p50": float(np.median(ours[5:])), "ours_ms_per_hop_p99": float(np.percentile(ours[5:], 99)),
            "naive_ms_per_hop_at_end": naive[-1][1], "naive_by_buffer_s": naive}


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


def main() -> None:
    """Run the three measurements and print them with the goals and the peer ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--model", default="ecg-3to12")
    args = parser.parse_args()
    from medge.apps.ecg.ecg_model import load_lead_model

    with tempfile.TemporaryDirectory() as tmp:
        model, app = load_lead_model(args.model, threads=2)  # exports the zoo model to the cache first
        r = live(args.seconds, args.model, Path(tmp))
        peer = peer_vs_ours(model, args.seconds)
        xrt = offline(model)
        app.close()
    hop_ms = r["hop_s"] * 1000
    out = {
        "live": {"seconds": args.seconds, "reconstruct_ms_p99": r["reconstruct_ms"]["p99"],
                 "reconstruct_ms_p50": r["reconstruct_ms"]["p50"], "latency_ms_p50": r["latency_ms"]["p50"],
                 "latency_ms_p99": r["latency_ms"]["p99"], "latency_goal_ms": hop_ms + 50,
                 "windows": r["windows"], "frames": r["frames"]},
        "peer": peer, "peer_ratio_naive_over_ours": peer["naive_ms_per_hop_at_end"] / peer["ours_ms_per_hop_p50"],
        "offline_x_realtime": xrt, "cpu_count": os.cpu_count(),
    }
    print(f"live {args.seconds:g} s pty stream: reconstruct_ms p99 {out['live']['reconstruct_ms_p99']:.1f} (goal ≤ 20); "
          f"latency p99 {out['live']['latency_ms_p99']:.0f} ms (goal ≤ {hop_ms + 50:.0f})")
    print(f"per hop after {args.seconds:g} s: ours {peer['ours_ms_per_hop_p50']:.1f} ms, naive peer "
          f"{peer['naive_ms_per_hop_at_end']:.1f} ms ({out['peer_ratio_naive_over_ours']:.1f}× ours)")
    print(f"offline: {xrt:.0f}× real time (goal ≥ 500×)")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
