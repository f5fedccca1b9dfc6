"""The ultrasound app: source → prepare → [screen] → segment → overlay → view / window / recorder.

Each step runs in its own thread (`medge.apps.pipeline`).  A live or `--realtime` source never
waits: a frame that arrives while the next stage is busy overwrites the older one and counts as a
drop.  `--as-fast-as-possible` replays losslessly, so the rate is the pipeline's throughput.  In
every mode ``frames.in = processed + screened_out + dropped + corrupt``.  A live source that stalls
or disappears shows "no signal" and is reopened with backoff; a new frame size is processed at that
size (see `medge.apps.ultrasound.feed`); both are counted in ``source_events``.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np

from medge.apps.pipeline import Item, Pipeline, Sink, SourceEvent, Stage, clock
from medge.apps.scheduling import check_realtime, realtime_threads, thread_scheduling
from medge.common.errors import UsageError
from medge.common.reports import Report
from medge.apps.model import AppModel, classifier_threshold
from medge.apps.ultrasound.feed import Feed
from medge.apps.ultrasound.outputs import VideoRecorder, WindowView, check_window_support
from medge.apps.ultrasound.overlay import mask_at_frame, min_area_px, no_signal_card, parse_min_area
from medge.apps.ultrasound.render import Renderer, Snapshot, downscale
from medge.apps.ultrasound.sources import open_source
from medge.apps.view import BrowserView, encode_jpeg, parse_view
from medge.common.fileio import sha256_file


DEFAULT_MIN_AREA_MM2, DEFAULT_MIN_AREA_PX = 7.0, 25.0  # a 3 mm disc; 5×5 px
DEMO_NOTICE = "demo weights trained on synthetic data: not for clinical use"


@dataclass
class UltrasoundConfig:
    """Everything `medge ultrasound` needs (see the command's help for each field)."""

    segmenter: str
    source: str
    screen: str | None = None
    screen_threshold: float | None = None
    view: str = "browser"
    realtime: bool = True
    frames: int | None = None
    record: str | None = None
    threads: int | None = None
    device: str | None = None
    fps: float | None = None
    mm_per_px: float | None = None
    camera_size: tuple[int, int] | None = None
    camera_format: str | None = None
    input_size: tuple[int, int] | None = None
    mask_threshold: float = 0.5
    jpeg_quality: int = 80
    view_size: tuple[int, int] | None = None  # the view's and recording's size (default: `render.default_view_size`)
    warmup: int = 5
    progress: bool = True
    stall_timeout: float = 1.0
    min_lesion_area: str | None = None  # "25px" / "7mm2"; default DEFAULT_MIN_AREA_MM2 when calibrated, else _PX
    linger_s: float = 0.0  # the browser view stays open this long after a file source ends
    view_security: Any = None  # medge.apps.view_security.ViewSecurity (HTTPS, token, bind rule)
    rt_priority: int | None = None  # SCHED_FIFO priority of the capture, decode and stage threads


@dataclass
class UltrasoundReport(Report):
    """What one run of the app did: source, models, frame accounting, rate and latency."""

    title: ClassVar[str] = "ultrasound"
    source: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    mode: str = ""
    frames: dict[str, int] = field(default_factory=dict)
    fps: float | None = None
    latency_ms: dict[str, Any] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    source_events: dict[str, Any] = field(default_factory=dict)
    lesion: dict[str, Any] = field(default_factory=dict)
    view: dict[str, Any] = field(default_factory=dict)
    scheduling: str = "SCHED_OTHER"  # of the capture, decode and stage threads
    record: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    stopped_early: bool = False
    elapsed_s: float = 0.0

    def table_rows(self) -> list[tuple[str, str]]:
        def ms(s: dict[str, Any]) -> str:
            if not s or s.get("p50") is None:
                return "n/a"
            return f"p50 {s['p50']:.1f}  p95 {s['p95']:.1f}  p99 {s['p99']:.1f}  max {s['max']:.1f} ms"

        src = self.source
        size = f"{src.get('width')}×{src.get('height')}"
        mm = f", {src['mm_per_px']:.3f} mm/px" if src.get("mm_per_px") else ", areas in px"
        fps = f"{src['fps']:.1f}" if src.get("fps") else "?"
        rows = [("source", f"{src.get('kind')} {src.get('label', '')} {size}{mm}, {fps} fps"),
                ("mode", self.mode + (" (stopped early)" if self.stopped_early else "")),
                ("threads", f"capture and stages {self.scheduling}")]
        for role, m in self.models.items():
            rows.append((role, f"{m['model']} sha256 {m['sha256'][:12]}{' (demo weights)' if m.get('demo') else ''}: "
                               f"{m['artifact']} [{m['runtime']}/{m['device']}] input {'×'.join(map(str, m['input']))}"))
        f = self.frames
        rows.append(("frames", f"in {f.get('in')} = processed {f.get('processed')} + screened out {f.get('screened_out')} "
                               f"+ dropped {f.get('dropped')} + corrupt {f.get('corrupt')}"))
        events = self.source_events
        if events.get("counts"):
            counts = ", ".join(f"{k} {v}" for k, v in sorted(events["counts"].items()))
            rows.append(("source events", f"{counts}; no signal {events['no_signal_s']:.1f} s; sizes "
                                          f"{', '.join(events['sizes'])}"))
        rows.append(("fps", f"{self.fps:.1f}" if self.fps else "n/a"))
        rows.append(("latency end to end", ms(self.latency_ms.get("end_to_end", {}))))
        for name, s in self.latency_ms.get("stages", {}).items():
            rows.append((f"  {name}", ms(s)))
        if self.lesion:
            rows.append(("lesion", ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.lesion.items())))
        if self.view.get("url"):
            size = "×".join(map(str, self.view.get("size", [])))
            rows.append(("view", f"{self.view['url']} at {size} ({self.view.get('frames_sent', 0)} frames sent, "
                                 f"{self.view.get('frames_encoded', 0)} encoded)"))
        if self.record:
            rows.append(("record", f"{self.record['path']} ({self.record['frames']} frames)"))
        rows += [("warning", w) for w in self.warnings]
        return rows


@dataclass
class UsFrame:
    """The payload that flows through the stages."""

    index: int
    image: np.ndarray  # uint8 grey (H, W)
    truth: np.ndarray | None = None  # true lesion mask (synthetic source)
    x_seg: np.ndarray | None = None
    x_screen: np.ndarray | None = None
    score: float | None = None
    prob: np.ndarray | None = None
    notice: str | None = None
    snapshot: Any = None  # render.Snapshot: what the view, recorder and window draw


class _LesionTally:
    """Lesion statistics gathered in the overlay thread (with Dice against the truth of synthetic frames);
    the report holds them rounded as the table prints them (areas 0.1 mm², Dice 0.001)."""

    def __init__(self, min_area: tuple[float, str]) -> None:
        self.min_area = min_area
        self.segmented = 0
        self.with_lesion = 0
        self.max_area_px = 0
        self.max_area_mm2: float | None = None
        self.dice: list[float] = []

    def add(self, seg: Any, truth: np.ndarray | None) -> None:
        """Count one segmented frame (`seg`: an `overlay.Segmentation`; `truth`: its true mask or None)."""
        area_px = seg.area_px
        self.segmented += 1
        if area_px:
            self.with_lesion += 1
        self.max_area_px = max(self.max_area_px, area_px)
        if seg.area_mm2 is not None:
            self.max_area_mm2 = max(self.max_area_mm2 or 0.0, seg.area_mm2)
        if truth is not None:
            true_px = int(np.count_nonzero(truth))
            if true_px:
                (x, y), (h, w) = seg.origin, seg.roi.shape
                inter = int(np.count_nonzero(seg.roi & truth[y:y + h, x:x + w])) if area_px else 0
                self.dice.append(2.0 * inter / (area_px + true_px))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"segmented_frames": self.segmented, "frames_with_lesion": self.with_lesion,
                                "min_lesion_area": f"{self.min_area[0]:g} {'mm²' if self.min_area[1] == 'mm2' else 'px'}"}
        if self.max_area_mm2 is not None:
            data["max_area_mm2"] = round(self.max_area_mm2, 1)
        else:
            data["max_area_px"] = self.max_area_px
        if self.dice:  # synthetic source: how well the bundle finds the lesion it was shown
            data["dice_vs_truth_median"] = round(float(np.median(self.dice)), 3)
            data["dice_vs_truth_frames"] = len(self.dice)
        return data


def _probability_plane(outputs: list[np.ndarray]) -> np.ndarray:
    """(H, W) lesion probability from a segmenter's first output (sigmoid map, or 2-class softmax/logits)."""
    y = outputs[0]
    y = y.reshape(-1, y.shape[-2], y.shape[-1])
    plane = y[-1] if y.shape[0] <= 2 else y[0]
    if plane.min() < 0.0 or plane.max() > 1.0:  # logits
        plane = 1.0 / (1.0 + np.exp(-plane))
    return plane


def _progress_line(stats: dict[str, Any]) -> None:
    f, lat = stats["frames"], stats["latency_ms"]["end_to_end"]
    fps = stats.get("fps_recent") or 0.0
    p50 = f"{lat['p50']:.1f} ms" if lat["p50"] is not None else "n/a"
    signal = "" if stats["source"]["signal"] else ", NO SIGNAL"
    print(f"medge ultrasound: {f['in']} frames in, {f['out']} out, {fps:.1f} fps, p50 {p50}, "
          f"{f['dropped']} dropped, {f['corrupt']} corrupt{signal}", file=sys.stderr, flush=True)


def _calibration(info: Any, width: int, height: int) -> list[float] | None:
    """mm per pixel (x, y) for a frame of `width`×`height` from a source calibrated at its first size
    (a new size is taken as the same field of view at another resolution)."""
    if not info.mm_per_px_xy:
        return None
    return [info.mm_per_px_xy[0] * info.width / width, info.mm_per_px_xy[1] * info.height / height]


def model_identity(model: Any) -> dict[str, Any]:
    """Name, version (the artifact's sha256) and whether a model carries medge's demo weights (a zoo
    model exported without --weights)."""
    source = (model.meta.extra or {}).get("source") or {}
    return {"model": model.meta.model, "sha256": sha256_file(model.ref.path),
            "demo": source.get("kind") == "zoo" and not source.get("weights")}


def _min_area(config: UltrasoundConfig, info: Any) -> tuple[float, str]:
    """The minimum lesion area of this run: `--min-lesion-area`, else the default for the source."""
    if config.min_lesion_area is None:
        return (DEFAULT_MIN_AREA_MM2, "mm2") if info.mm_per_px_xy else (DEFAULT_MIN_AREA_PX, "px")
    value, unit = parse_min_area(config.min_lesion_area)
    if unit == "mm2" and not info.mm_per_px_xy:
        raise UsageError(f"--min-lesion-area {config.min_lesion_area} is in mm² but the source has no calibration "
                         "(no mm per pixel); give it in px (e.g. 25px) or pass --mm-per-px")
    return value, unit


def _linger(view: Any, seconds: float) -> None:
    """Keep the browser view (last frame, final stats) open `seconds` after the run; Ctrl-C ends it."""
    import time

    print(f"medge ultrasound: the run ended; the view stays open {seconds:g} s (Ctrl-C ends it)", file=sys.stderr,
          flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        time.sleep(seconds)


def run_ultrasound(config: UltrasoundConfig) -> UltrasoundReport:
    """Run the app until the source ends, `--frames` are read, or SIGINT/SIGTERM; return the report."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():  # SIGTERM while loading: a clean "interrupted"
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            return _run(config)
        finally:
            signal.signal(signal.SIGTERM, previous)
    return _run(config)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def default_threads() -> int:
    """Inference threads per model when --threads is not given: half the CPU cores (at least one), so
    that the models leave room for the capture, resize and overlay threads beside them."""
    import os

    return max(1, (os.cpu_count() or 2) // 2)


def _run(config: UltrasoundConfig) -> UltrasoundReport:
    import cv2

    kind, host, port = parse_view(config.view)
    if config.frames is not None and config.frames < 1:
        raise UsageError(f"--frames must be at least 1 (got {config.frames})")
    if config.screen_threshold is not None and not 0.0 <= config.screen_threshold <= 1.0:
        raise UsageError(f"--screen-threshold must be in [0, 1] (got {config.screen_threshold})")
    if config.screen_threshold is not None and not config.screen:
        raise UsageError("--screen-threshold needs --screen BUNDLE")
    if not config.stall_timeout > 0:
        raise UsageError(f"--stall-timeout must be > 0 seconds (got {config.stall_timeout})")
    if kind == "window":
        check_window_support()
    check_realtime(config.rt_priority)

    with contextlib.ExitStack() as stack:
        view = None
        if kind == "browser":
            view = BrowserView(host, port, title="medge ultrasound", security=config.view_security,
                               port_hint="pass a free one with --view browser:HOST:PORT (port 0 picks any)")
            stack.enter_context(view)

        def reopen() -> Any:  # a FrameSource; called again by the feed when a live source is lost
            return open_source(config.source, fps=config.fps, camera_size=config.camera_size,
                               camera_format=config.camera_format)

        # From here on the threads this one starts (the source's decoder threads, the stages) run at
        # --rt-priority; the view's server, started above, keeps the normal policy.
        stack.enter_context(realtime_threads(config.rt_priority))
        scheduling = thread_scheduling()
        source = Feed(reopen(), reopen, stall_s=config.stall_timeout)
        stack.callback(source.close)
        threads = config.threads or default_threads()
        cv2.setNumThreads(1)  # the stages already run side by side: OpenCV's own pool would only fight them
        seg = stack.enter_context(AppModel.open(config.segmenter, role="--segmenter", expect_task="segmentation",
                                                device=config.device, threads=threads, input_size=config.input_size))
        screen = None
        if config.screen:
            screen = stack.enter_context(AppModel.open(config.screen, role="--screen",
                                                       expect_task=("classification", "multilabel-classification"),
                                                       device=config.device, threads=threads))
        threshold = config.screen_threshold if config.screen_threshold is not None else (
            classifier_threshold(screen.meta) if screen else None)
        info = source.info
        if config.rt_priority is not None and not config.realtime and not info.live:
            raise UsageError("--rt-priority is for a paced or live source: with --as-fast-as-possible every CPU stays "
                             "busy, and real-time threads would starve the view and the rest of the machine; "
                             "leave one of them out")
        if config.mm_per_px is not None:
            if config.mm_per_px <= 0:
                raise UsageError(f"--mm-per-px must be > 0 (got {config.mm_per_px})")
            if info.kind == "dicom":
                info.warnings.append(f"--mm-per-px {config.mm_per_px:g} overrides the file's own calibration")
            info.mm_per_px, info.mm_per_px_xy = config.mm_per_px, [config.mm_per_px, config.mm_per_px]
        min_area = _min_area(config, info)
        identities = {"segmenter": model_identity(seg), **({"screen": model_identity(screen)} if screen else {})}
        for identity in identities.values():
            identity["threads"] = threads
        if view is not None:
            demo = [f"{role} {m['model']}: {DEMO_NOTICE}" for role, m in identities.items() if m["demo"]]
            view.set_header([f"{role}: {m['model']}, version sha256 {m['sha256'][:12]}" for role, m in identities.items()],
                            demo + list(info.warnings))
        for warning in info.warnings:
            print(f"medge ultrasound: warning: {warning}", file=sys.stderr)
        for model in (seg, screen):  # first inference outside the timed pipeline (lazy runtime init)
            if model is not None:
                model.run(model.prepare(np.zeros((info.height, info.width), np.float32)))

        tally = _LesionTally(min_area)
        live = info.live
        lossless = not config.realtime and not live
        mode = "live" if live else ("realtime" if config.realtime else "as-fast-as-possible")
        timing: list[Pipeline] = []  # the pipeline, once made: the view's encodes are timed in its stats
        renderer = Renderer(config.view_size, config.jpeg_quality,
                            on_encoded=lambda snap: timing[0].stats_data.record_latency("view", snap.t_acquired))
        seg_h, seg_w = seg.input_hw

        def prepare(item: Item) -> UsFrame:  # the frame at each model's own size, from as few resizes as the sizes allow
            frame = item.data
            small = downscale(frame.image, seg_w, seg_h)
            x_screen = None
            if screen is not None:
                sh, sw = screen.input_hw
                x_screen = screen.prepare(downscale(small if sh <= seg_h and sw <= seg_w else frame.image, sw, sh)
                                          .astype(np.float32) * np.float32(1.0 / 255.0))
            return UsFrame(frame.index, frame.image, frame.truth, seg.prepare(small.astype(np.float32) * np.float32(1.0 / 255.0)),
                           x_screen, notice=frame.notice)

        def run_screen(item: Item) -> UsFrame:
            data: UsFrame = item.data
            data.score = float(np.ravel(screen.run(data.x_screen)[0])[0])
            if data.score < threshold:
                item.flags.add("screened_out")
            return data

        def segment(item: Item) -> UsFrame:
            data: UsFrame = item.data
            if "screened_out" not in item.flags:
                data.prob = _probability_plane(seg.run(data.x_seg))
            return data

        last: list[Snapshot] = []  # the newest overlay, dimmed under "NO SIGNAL" while the source is silent

        def overlay(item: Item) -> UsFrame:  # the lesion at frame resolution; drawing waits for a consumer
            data: UsFrame = item.data
            result = None
            if data.prob is not None:
                h, w = data.image.shape
                calibration = _calibration(info, w, h)
                result = mask_at_frame(data.prob, h, w, calibration, config.mask_threshold,
                                       min_area_px(min_area, calibration))
                tally.add(result, data.truth)
            data.snapshot = Snapshot(data.image, result, data.index, item.t_acquired, "screened_out" in item.flags,
                                     data.notice)
            last[:] = [data.snapshot]
            if view is not None:
                view.publish(renderer.lazy_jpeg(data.snapshot))
            return data

        def on_event(event: SourceEvent) -> None:
            if event.signal is False:
                print(f"medge ultrasound: no signal from the source ({event.kind}); "
                      + ("reopening it" if event.kind == "lost" else "waiting for frames"), file=sys.stderr, flush=True)
                if view is not None:
                    previous = next(iter(last), None)
                    size = renderer.view_size(info.width, info.height)
                    view.publish(lambda: renderer.jpeg(no_signal_card(
                        renderer.bgr(previous) if previous is not None else None, *size)))
            elif event.kind in ("restored", "resize"):
                detail = f"after {event.detail['gap_s']:.1f} s" if event.kind == "restored" else \
                    "{}×{} → {}×{}".format(*event.detail["from"], *event.detail["to"])
                print(f"medge ultrasound: source {event.kind} ({detail})", file=sys.stderr, flush=True)

        def warm_up() -> None:  # first calls of OpenCV's resize, labelling and JPEG paths, outside the timed run
            image = np.zeros((info.height, info.width), np.uint8)  # (at 1080p60 they cost the first frames 20-30 ms)
            prepare(Item(-1, SimpleNamespace(index=-1, image=image, truth=None, notice=None), clock()))
            prob = np.zeros((seg_h, seg_w), np.float32)
            prob[seg_h // 4:seg_h // 2, seg_w // 4:seg_w // 2] = 1.0
            calibration = _calibration(info, info.width, info.height)
            result = mask_at_frame(prob, info.height, info.width, calibration, config.mask_threshold,
                                   min_area_px(min_area, calibration))
            encode_jpeg(renderer.bgr(Snapshot(image, result, -1, clock(), False, None)), config.jpeg_quality)

        warm_up()
        stages = [Stage("prepare", prepare)]
        if screen is not None:
            stages.append(Stage("screen", run_screen))
        stages += [Stage("segment", segment), Stage("overlay", overlay)]
        sinks = []
        if kind == "window":
            window = WindowView()
            sinks.append(Sink("window", lambda item: window.show(renderer.bgr(item.data.snapshot)), close=window.close))
        recorder = None
        if config.record:
            recorder = VideoRecorder(config.record, info.fps or 30.0)
            stack.callback(recorder.discard)
            sinks.append(Sink("record", lambda item: recorder.write(renderer.bgr(item.data.snapshot)), lossless=True,
                              close=recorder.finish))
        pipeline = Pipeline(source, stages, sinks, lossless=lossless, pace=None if (live or lossless) else source.interval,
                            limit=config.frames, warmup=config.warmup, on_event=on_event,
                            timed=["view"] if view is not None else [])
        timing.append(pipeline)
        source.stop = pipeline.stop_event  # a stop ends a stall wait or a reopen backoff at once
        if view is not None:
            view.set_stats(pipeline.stats)
            print(f"medge ultrasound: browser view at {view.open_url}", file=sys.stderr, flush=True)
        stats = pipeline.run(progress=_progress_line if config.progress else None)
        if view is not None and config.linger_s > 0 and not stats["stopped_early"]:
            _linger(view, config.linger_s)
        report = _report(config, info, identities, seg, screen, threshold, mode, stats, tally, view, recorder,
                         source.sizes, renderer)
        report.scheduling = scheduling
        return report


def _report(config: UltrasoundConfig, info, identities: dict[str, dict[str, Any]], seg, screen, threshold, mode: str,
            stats: dict[str, Any], tally: _LesionTally, view, recorder, sizes: list[tuple[int, int]],
            renderer: Any) -> UltrasoundReport:
    f = stats["frames"]
    screened = int(f["flags"].get("screened_out", 0))
    models = {"segmenter": {**seg.describe(), **identities["segmenter"]}}
    if screen is not None:
        models["screen"] = {**screen.describe(), **identities["screen"], "threshold": threshold}
    source = {"kind": info.kind, "label": info.label, "fps": info.fps, "frames": info.frames, "width": info.width,
              "height": info.height, "mm_per_px": info.mm_per_px, "mm_per_px_xy": info.mm_per_px_xy, **info.details}
    return UltrasoundReport(
        source=source, models=models, mode=mode,
        frames={"in": f["in"], "processed": f["out"] - screened, "screened_out": screened, "dropped": f["dropped"],
                "corrupt": f["corrupt"]},
        fps=stats["fps"], latency_ms={k: stats["latency_ms"][k] for k in ("end_to_end", "stages", "sinks")},
        drops=stats["drops"], lesion=tally.to_dict(),
        source_events={"counts": stats["source"]["events"], "no_signal_s": stats["source"]["no_signal_s"],
                       "sizes": [f"{w}x{h}" for w, h in sizes]},
        view={"kind": parse_view_kind(config.view), "url": view.url if view else None,
              "frames_sent": view.frames_sent if view else 0, **renderer.describe(info.width, info.height)},
        record={"path": str(recorder.path), "frames": recorder.frames} if recorder and recorder.path.exists() else None,
        warnings=list(info.warnings) + ([hint] if (hint := drop_hint(stats, info.fps, config.rt_priority)) else []),
        stopped_early=bool(stats["stopped_early"]), elapsed_s=stats["elapsed_s"],
    )


def drop_hint(stats: dict[str, Any], source_fps: float | None, rt_priority: int | None) -> str | None:
    """Why frames were dropped, and what to do: a stage slower than the source's frame interval (at p50)
    is too slow for the rate; when every stage is faster, other threads preempted them (`--rt-priority`)."""
    dropped, n_in = stats["frames"]["dropped"], stats["frames"]["in"]
    if not dropped or not source_fps:
        return None
    interval = 1000.0 / source_fps
    medians = [(s["p50"], name) for name, s in stats["latency_ms"]["stages"].items() if s.get("p50") is not None]
    if not medians:
        return None
    p50, slowest = max(medians)
    if p50 > interval:
        return (f"{dropped} of {n_in} frames dropped: the {slowest} stage takes {p50:.1f} ms per frame (p50), more than "
                f"the source's {interval:.3g} ms; use a faster bundle (INT8, `medge build --prune`) or a lower frame rate")
    if rt_priority is None:
        return (f"{dropped} of {n_in} frames dropped although every stage is faster than the source's {interval:.3g} ms "
                "per frame (p50): other threads preempted them; --rt-priority N runs capture and stages SCHED_FIFO")
    return None


def parse_view_kind(spec: str) -> str:
    """``browser`` / ``window`` / ``none`` from a --view value."""
    return spec.partition(":")[0]
