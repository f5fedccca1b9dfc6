"""`--hop 0.25`: a reconstruction every quarter second on a short window that gives the full window's output."""

from __future__ import annotations

import numpy as np

from medge.apps.ecg.filters import StreamFilter
from medge.apps.ecg.reconstruct import STANDARD_LEADS, InputWindow, LeadModel, StreamingReconstructor

HOP_S, RATE = 0.25, 500.0
TOLERANCE_MV = 1e-4  # short window vs full window, per sample (float32 rounding; the net's receptive field is ±0.2 s)


def _live(model: LeadModel, x: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Push `x` (3, N) in quarter-second blocks; the overlap-added 12-lead output and each chunk's start."""
    hop = round(HOP_S * RATE)
    filt, window = StreamFilter(3, RATE), InputWindow(model.samples, hop)
    recon = StreamingReconstructor(model, RATE, HOP_S)
    out, starts = np.full((12, x.shape[1]), np.nan), []
    for s in range(0, x.shape[1], hop):
        window.push(s, filt.process(x[:, s:s + hop].T), 0.0)
        if window.hop_ready():
            chunk = recon.step(window.snapshot())
            out[:, chunk.start:chunk.start + len(chunk.values_mv)] = chunk.values_mv.T
            starts.append(chunk.start)
    tail = recon.flush()
    out[:, tail.start:tail.start + len(tail.values_mv)] = tail.values_mv.T
    return out, starts


def test_quarter_hop_short_window_matches_the_full_window():
    from medge.apps.ecg.fit import torch_infer
    from medge.apps.ecg.sources import synthetic_record
    from medge.zoo import build_model

    net = build_model("ecg-3to12", pretrained=True)
    x = synthetic_record(12, 3).pick(("II", "V1", "V5"))
    short, starts = _live(LeadModel(torch_infer(net), ("II", "V1", "V5"), STANDARD_LEADS, RATE, 1000), x)
    full, _ = _live(LeadModel(torch_infer(net), ("II", "V1", "V5"), STANDARD_LEADS, RATE, 5000), x)
    assert np.diff(starts)[1:].tolist() == [round(HOP_S * RATE)] * (len(starts) - 2)  # a window every 0.25 s
    assert np.isfinite(short).all()  # every sample emitted exactly once, none lost between hops
    assert np.abs(short - full).max() <= TOLERANCE_MV


def test_stream_quarter_hop_zoo_model_runs_a_short_window(run_cli, simulator, tmp_path, monkeypatch):
    import wfdb

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the zoo model is exported at 2 s here
    truth_path = tmp_path / "truth.npz"
    sim = simulator("--seconds", 9, "--realtime", "--seed", 4, "--ground-truth", truth_path)
    rec = tmp_path / "rec"
    res = run_cli("ecg", "stream", "--model", "ecg-3to12", "--port", sim.link, "--hop", HOP_S, "--seconds", 6,
                  "--record", rec, report=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    r = res.report
    assert r["model"]["input"] == [1, 3, 1000] and r["hop_s"] == HOP_S
    assert r["windows"]["reconstructed"] >= 20 and r["windows"]["skipped"] == 0  # ~4 per second of the 6 s
    assert r["latency_ms"]["p50"] < 300  # a 1 s hop waits ~500 ms for the median sample
    sim.finish()
    truth = np.load(truth_path)
    first = r["samples"]["first_sample_index"]
    got = wfdb.rdrecord(str(rec)).p_signal * 1000.0
    np.testing.assert_allclose(got, truth["samples_uv"][first:first + len(got)], atol=1.0)  # samples exact (1 µV units)
    twelve = wfdb.rdrecord(f"{rec}_12lead").p_signal
    assert twelve.shape[0] == len(got) and np.isfinite(twelve).all()


def test_strip_sweeps_at_the_sample_rate_between_hops():
    """Frames at 25 fps move the strip's right edge by rate/25 samples each, not a hop at a time."""
    from medge.apps.ecg.sweep import FPS, StripSweep

    hop = round(HOP_S * RATE)
    signal = np.arange(20 * hop, dtype=np.float64)  # sample k has value k: the strip shows which samples
    sweep = StripSweep(12, RATE, hop, 5.0)
    edges, k = [], 0
    for j in range(int(19 * HOP_S * FPS)):  # frames at 25 fps; a chunk arrives every hop
        now = j / FPS
        while k * HOP_S <= now:
            sweep.add(k * hop, np.repeat(signal[k * hop:(k + 1) * hop, None], 12, axis=1), False, k * HOP_S)
            k += 1
        if now >= 2 * HOP_S:  # (the display settles one hop behind after the first chunk)
            edges.append(np.nanmax(sweep.window(now)[0]) + 1)  # index one past the newest sample shown
            assert abs(edges[-1] - sweep.shown(now)) <= 1
    steps = np.diff(edges)
    assert steps.max() <= RATE / FPS + 1 and steps.min() >= RATE / FPS - 1  # ~20 samples per frame, no jump
    assert k * hop - edges[-1] <= 2 * hop  # about a hop behind the newest sample
