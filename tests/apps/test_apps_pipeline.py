"""The app pipeline with real threads: latest-wins drops, lossless replay, pacing, stats, stop, errors."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from medge.apps.pipeline import Corrupt, Item, LatencyHistogram, Pipeline, Sink, Slot, Stage


def _frames(n: int):
    return iter(range(n))


def _accounting_closes(stats: dict) -> None:
    f = stats["frames"]
    assert f["in"] == f["out"] + f["dropped"] + f["corrupt"] + f["discarded"], f


def test_slow_stage_drops_and_counts_in_latest_wins_mode():
    seen: list[int] = []
    slow = Stage("slow", lambda item: (time.sleep(0.02), item.data)[1])
    record = Sink("record", lambda item: seen.append(item.data), lossless=True)
    stats = Pipeline(_frames(200), [Stage("fast", lambda item: item.data), slow], [record], pace=0.002, warmup=2).run()
    f = stats["frames"]
    assert f["in"] == 200
    assert f["dropped"] > 0 and f["out"] < 200
    assert stats["drops"]["fast->slow"] + stats["drops"]["source->fast"] == f["dropped"]
    assert len(seen) == f["out"]  # the lossless sink got every output
    assert seen == sorted(seen)  # order kept
    _accounting_closes(stats)


def test_lossless_replay_processes_every_item_and_measures_throughput():
    out: list[int] = []
    stages = [Stage("a", lambda item: item.data * 2), Stage("b", lambda item: (time.sleep(0.002), item.data + 1)[1])]
    stats = Pipeline(_frames(60), stages, [Sink("collect", lambda item: out.append(item.data), lossless=True)],
                     lossless=True, warmup=5).run()
    assert out == [i * 2 + 1 for i in range(60)]
    assert stats["frames"] == {"in": 60, "out": 60, "dropped": 0, "corrupt": 0, "discarded": 0, "flags": {}}
    assert stats["fps"] is not None and stats["fps"] < 1000  # bounded by the 2 ms stage
    lat = stats["latency_ms"]
    assert lat["end_to_end"]["count"] == 55  # warm-up excluded
    assert lat["stages"]["b"]["p50"] >= 1.5
    assert lat["end_to_end"]["p50"] <= lat["end_to_end"]["p95"] <= lat["end_to_end"]["p99"] <= lat["end_to_end"]["max"]
    assert lat["sinks"]["collect"]["count"] == 55


def test_lossy_sink_never_slows_the_stages():
    stalled = threading.Event()
    sink = Sink("stalled", lambda item: stalled.wait(5))  # a client that never reads
    t0 = time.perf_counter()
    stats = Pipeline(_frames(100), [Stage("s", lambda item: item.data)], [sink], lossless=True).start()
    while stats.stats()["frames"]["out"] < 100 and time.perf_counter() - t0 < 5:
        time.sleep(0.01)
    assert stats.stats()["frames"]["out"] == 100
    assert time.perf_counter() - t0 < 3
    stalled.set()
    final = stats.join(10) and stats.stats()
    assert final["drops"]["sink:stalled"] >= 90
    assert final["frames"]["dropped"] == 0  # sink drops are not pipeline losses


def test_pacing_spaces_items_out():
    stats = Pipeline(_frames(21), [Stage("s", lambda item: item.data)], pace=0.02, warmup=0).run()
    assert stats["elapsed_s"] >= 0.35
    assert stats["frames"]["in"] == 21
    _accounting_closes(stats)  # a scheduling hiccup on a busy machine may drop one; it is counted


def test_corrupt_and_discarded_items_are_counted():
    source = [0, Corrupt("bad crc"), 2, Corrupt("bad crc"), Corrupt("truncated"), 5, 6]
    keep_even = Stage("even", lambda item: item.data if item.data % 2 == 0 else None)
    stats = Pipeline(iter(source), [keep_even], lossless=True, warmup=0).run()
    assert stats["frames"]["in"] == 7 and stats["frames"]["corrupt"] == 3
    assert stats["corrupt_reasons"] == {"bad crc": 2, "truncated": 1}
    assert stats["frames"]["discarded"] == 1 and stats["discarded_by_stage"] == {"even": 1}
    _accounting_closes(stats)


def test_flags_are_counted_at_the_end():
    def screen(item: Item):
        if item.data % 3:
            item.flags.add("screened_out")
        return item.data

    stats = Pipeline(_frames(30), [Stage("screen", screen)], lossless=True).run()
    assert stats["frames"]["flags"] == {"screened_out": 20}


def test_stop_ends_an_endless_source_and_stats_are_live():
    pipe = Pipeline(itertools.count(), [Stage("s", lambda item: (time.sleep(0.001), item.data)[1])], pace=0.001).start()
    deadline = time.perf_counter() + 30  # wait for the first output, however busy the machine
    while pipe.stats()["frames"]["out"] == 0 and time.perf_counter() < deadline:
        time.sleep(0.01)
    live = pipe.stats()
    assert live["running"] and live["frames"]["out"] > 0
    pipe.stop()
    assert pipe.join(5)
    final = pipe.stats()
    assert not final["running"] and final["stopped_early"]
    _accounting_closes(final)


def test_stage_error_is_raised_in_join_and_stops_everything():
    def boom(item: Item):
        if item.data == 5:
            raise ValueError("stage failed")
        return item.data

    pipe = Pipeline(itertools.count(), [Stage("boom", boom), Stage("next", lambda item: item.data)], lossless=True)
    with pytest.raises(ValueError, match="stage failed"):
        pipe.run()


def test_limit_and_stage_close_run_in_their_threads():
    closed: list[str] = []
    stage = Stage("s", lambda item: item.data, close=lambda: closed.append(threading.current_thread().name))
    stats = Pipeline(itertools.count(), [stage], limit=10, lossless=True).run()
    assert stats["frames"]["in"] == 10
    assert closed == ["medge-s"]


def test_slot_overwrites_and_lossless_slot_waits():
    slot = Slot("x")
    assert slot.put(Item(0, "a", 0.0)) is None
    assert slot.put(Item(1, "b", 0.0)).data == "a"
    assert slot.drops == 1 and slot.get().data == "b"
    assert slot.get(timeout=0.01) is None
    lossless = Slot("y", lossless=True)
    lossless.put(Item(0, "a", 0.0))
    done = threading.Event()
    threading.Thread(target=lambda: (lossless.put(Item(1, "b", 0.0)), done.set()), daemon=True).start()
    assert not done.wait(0.1)  # the producer waits for the consumer
    assert lossless.get().data == "a"
    assert done.wait(2) and lossless.get().data == "b" and lossless.drops == 0


def test_histogram_percentiles_match_numpy():
    rng = np.random.default_rng(0)
    values = rng.lognormal(1.0, 0.8, 5000)
    hist = LatencyHistogram()
    for v in values:
        hist.add(v)
    for q in (50, 95, 99):
        assert hist.percentile(q) == pytest.approx(np.percentile(values, q, method="inverted_cdf"), rel=0.006)
    assert hist.summary()["max"] == pytest.approx(values.max())
    assert LatencyHistogram().summary()["p50"] is None


def test_source_events_are_counted_apart_from_frames_and_limit_stops_at_once():
    from medge.apps.pipeline import SourceEvent, clock

    seen: list[str] = []
    blocked = threading.Event()

    def source():
        yield 0
        yield SourceEvent("stall", signal=False, at=clock() - 2.0)  # silent for 2 s already
        yield SourceEvent("resize")
        yield 1
        yield SourceEvent("restored", signal=True)
        yield 2
        blocked.wait(30)  # a live source with nothing more to send: --frames 3 must not wait for it
        yield 3

    t0 = time.perf_counter()
    stats = Pipeline(source(), [Stage("s", lambda item: item.data)], limit=3, lossless=True,
                     on_event=lambda event: seen.append(event.kind)).run()
    assert time.perf_counter() - t0 < 10
    assert stats["frames"]["in"] == 3 and stats["frames"]["out"] == 3  # events are not frames
    assert stats["source"]["events"] == {"stall": 1, "resize": 1, "restored": 1} and seen == ["stall", "resize", "restored"]
    assert stats["source"]["signal"] is True and 2.0 <= stats["source"]["no_signal_s"] < 9
    _accounting_closes(stats)
    blocked.set()


def test_an_end_point_outside_the_threads_is_timed_with_the_sinks():
    acquired: list[float] = []
    pipeline = Pipeline(_frames(10), [Stage("only", lambda item: (acquired.append(item.t_acquired), item.data)[1])],
                        lossless=True, warmup=0, timed=["view"])
    stats = pipeline.run()
    assert stats["latency_ms"]["sinks"]["view"]["count"] == 0  # named before anything is drawn
    time.sleep(0.01)
    pipeline.stats_data.record_latency("view", acquired[-1])  # e.g. a frame drawn when a client asked
    view = pipeline.stats()["latency_ms"]["sinks"]["view"]
    assert view["count"] == 1 and view["p50"] >= 10
