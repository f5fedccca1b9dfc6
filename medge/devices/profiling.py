"""Profile one artifact the same way on every runtime.

Method: load (timed) → first inference (timed) → `warmup` untimed runs → `runs` timed runs →
percentiles, mean ± std, a bootstrap 95% CI of the median and single-stream throughput.  Memory is
the peak resident set of a fresh child process that does nothing but this profiling.  On Linux
the kernel's peak counter (VmHWM) is reset just before the model is loaded (runtime imported,
input data read), so the peak and its delta over the resident memory at that moment are the
loaded model's and its inference's own cost; elsewhere ``ru_maxrss`` (whole process) is used.
``runtime_info.peak_rss_method`` says which.  Per-layer times come from a separate profiling-enabled session (profilers
slow the timed runs down), where the runtime offers them.

Run as ``python -m medge.devices.profiling CONFIG.json OUT.json`` for the isolated child.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from medge.common.errors import MedgeError
from medge.common.reports import Report
from medge.common.fileio import write_json_atomic
from medge.common.registry import import_optional


@dataclass
class ProfileConfig:
    """What to profile and how."""

    artifact: str
    runtime: str | None = None
    runtime_device: str | None = None
    threads: int | None = None
    warmup: int = 10
    runs: int = 100
    inputs: str | None = None
    seed: int = 0
    top_layers: int = 10
    isolate: bool = True  # profile in a fresh child process (honest peak memory)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProfileReport(Report):
    """Latency, memory and size of one artifact on one runtime/device."""

    title: ClassVar[str] = "profile"
    artifact: str = ""
    runtime: str = ""
    device: str = ""
    threads: int | None = None
    warmup: int = 0
    runs: int = 0
    inputs_source: str = "random-normal"
    input_shapes: dict[str, list] = field(default_factory=dict)
    load_ms: float = 0.0
    first_inference_ms: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    median_ci95: list[float] = field(default_factory=list)
    throughput_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    rss_before_load_mb: float = 0.0
    peak_rss_delta_mb: float = 0.0
    size_bytes: int = 0
    layers: list[dict[str, Any]] = field(default_factory=list)
    runtime_info: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    remote: str | None = None

    def table_rows(self) -> list[tuple[str, str]]:
        lat = self.latency_ms
        rows = [
            ("artifact", self.artifact),
            ("runtime", f"{self.runtime} on {self.device} ({self.threads or 'default'} threads)"),
            ("host", f"{self.remote or 'local'}: {self.host.get('cpu', '?')}, {self.host.get('cores', '?')} cores"),
            ("inputs", self.inputs_source),
            ("load", f"{self.load_ms:.1f} ms"),
            ("first inference", f"{self.first_inference_ms:.2f} ms"),
            ("latency p50/p90/p99", f"{lat.get('p50', 0):.3f} / {lat.get('p90', 0):.3f} / {lat.get('p99', 0):.3f} ms"),
            ("latency mean ± std", f"{lat.get('mean', 0):.3f} ± {lat.get('std', 0):.3f} ms (max {lat.get('max', 0):.3f})"),
            ("median 95% CI", " – ".join(f"{v:.3f}" for v in self.median_ci95) + " ms"),
            ("throughput", f"{self.throughput_per_s:.1f} /s"),
            ("peak RSS", f"{self.peak_rss_mb:.1f} MB (+{self.peak_rss_delta_mb:.1f} MB for the model)"),
            ("size", f"{self.size_bytes / 1e6:.3f} MB"),
        ]
        rows += [(f"layer {r['name']}", f"{r.get('mean_us', 0):.1f} µs ({r.get('op', '')})") for r in self.layers]
        return rows


def host_info() -> dict[str, Any]:
    """CPU model, core count, OS and machine of this host."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def _current_rss_mb() -> float:
    """Resident memory of this process now (Linux); the peak so far where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return _peak_rss_mb()
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter (VmHWM, Linux ≥ 4.0); False where that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak resident memory: VmHWM (since the last reset) on Linux, else ``ru_maxrss`` (process lifetime)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def latency_stats(samples_ms: list[float], seed: int = 0, n_boot: int = 1000) -> tuple[dict[str, float], list[float]]:
    """The one latency summary (``p50 p90 p95 p99 max mean count``) plus ``std`` and ``min``, and a
    bootstrap 95% CI of the median."""
    import numpy as np

    from medge.evaluate.statistics import latency_summary, median_ci

    x = np.asarray(samples_ms, dtype=np.float64)
    stats = {**latency_summary(x), "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0, "min": float(x.min())}
    return stats, median_ci(x, n_boot=n_boot, seed=seed)


def validate_config(config: ProfileConfig) -> None:
    """Reject impossible settings before any work starts."""
    if config.runs < 2:
        raise MedgeError(f"--runs must be at least 2 (got {config.runs})")
    if config.warmup < 0:
        raise MedgeError(f"--warmup must be 0 or more (got {config.warmup})")
    if config.threads is not None and config.threads < 1:
        raise MedgeError(f"--threads must be at least 1 (got {config.threads})")


def load_profile_samples(config: ProfileConfig) -> list[list[Any]]:
    """The input arrays of up to 32 samples from ``config.inputs`` (model input order)."""
    from medge.runtimes import open_runtime
    from medge.runtimes.artifacts import resolve_artifact
    from medge.calibration.artifact_inputs import load_source_inputs

    ref = resolve_artifact(config.artifact, config.runtime)
    infos: list = []
    if ref.onnx is None:  # only the runtime can say what the input looks like
        device = config.runtime_device or ref.device or "cpu"
        with open_runtime(ref.path, ref.runtime, device=device, threads=config.threads, **config.options) as probe:
            infos = probe.inputs()
    samples, _, _ = load_source_inputs(str(config.inputs), ref, infos, n=min(config.runs, 32), seed=config.seed)
    return samples


def _save_samples(samples: list[list[Any]], path: Path) -> None:
    import numpy as np

    np.savez(path, **{f"s{i}_{j}": arr for i, sample in enumerate(samples) for j, arr in enumerate(sample)})


def _read_samples(config: ProfileConfig, prepared: str | None) -> list[list[Any]]:
    """Samples prepared by the parent process (an .npz), else read from the source here."""
    if prepared is None:
        return load_profile_samples(config)
    import numpy as np

    samples: dict[int, dict[int, Any]] = {}
    with np.load(prepared) as data:
        for key in data.files:
            i, j = (int(v) for v in key[1:].split("_"))
            samples.setdefault(i, {})[j] = data[key]
    return [[sample[j] for j in sorted(sample)] for _, sample in sorted(samples.items())]


def _profile_here(config: ProfileConfig, prepared: str | None = None) -> ProfileReport:
    """Profile in this process (the isolated child runs this).

    `prepared` is an .npz of input samples that the parent already read from ``config.inputs``,
    so that neither the reading nor a probe load of the model shows up in this process's memory.
    """
    import numpy as np

    from medge.runtimes import RUNTIMES, Runtime, open_runtime
    from medge.runtimes.artifacts import artifact_size, resolve_artifact
    from medge.runtimes.feeds import adapt_inputs, random_inputs

    ref = resolve_artifact(config.artifact, config.runtime)
    device = config.runtime_device or ref.device or "cpu"
    import_optional(RUNTIMES.get(ref.runtime).library or "numpy")  # imports are not the model's memory
    samples = _read_samples(config, prepared) if config.inputs else None
    rss_before = _current_rss_mb()
    peak_method = "VmHWM since model load" if _reset_peak_rss() else "process lifetime peak (ru_maxrss)"
    rt = open_runtime(ref.path, ref.runtime, device=device, threads=config.threads, **config.options)
    with rt:
        infos = rt.inputs()
        if samples is not None:
            feeds = [adapt_inputs(s, infos, who=ref.label) for s in samples]
            source = str(config.inputs)
        else:
            feeds = random_inputs(infos, seed=config.seed, count=min(config.runs, 8))
            source = f"random-normal(seed={config.seed})"
        rt.infer(feeds[0])
        first_ms = rt.last_infer_ms
        for i in range(config.warmup):
            rt.infer(feeds[i % len(feeds)])
        times = []
        for i in range(config.runs):
            rt.infer(feeds[i % len(feeds)])
            times.append(rt.last_infer_ms)
        load_ms = rt.load_ms
        info = {"xnnpack": rt.xnnpack_active} if hasattr(rt, "xnnpack_active") else {}
        info.update(inputs=[t.to_dict() for t in infos], outputs=[t.to_dict() for t in rt.outputs()])
    peak = _peak_rss_mb()
    layers: list[dict[str, Any]] = []
    if config.top_layers > 0 and type(rt).layer_profile is not Runtime.layer_profile:
        with open_runtime(ref.path, ref.runtime, device=device, threads=config.threads, profiling=True, **config.options) as prof:
            for i in range(min(config.runs, 20)):
                prof.infer(feeds[i % len(feeds)])
            layers = prof.layer_profile()[: config.top_layers]
    stats, ci = latency_stats(times, seed=config.seed)
    first = next(iter(feeds[0].values()), np.zeros(()))
    batch = int(first.shape[0]) if first.ndim else 1
    return ProfileReport(
        artifact=ref.label,
        runtime=ref.runtime,
        device=device,
        threads=config.threads,
        warmup=config.warmup,
        runs=config.runs,
        inputs_source=source,
        input_shapes={k: list(v.shape) for k, v in feeds[0].items()},
        load_ms=load_ms,
        first_inference_ms=first_ms,
        latency_ms=stats,
        median_ci95=ci,
        throughput_per_s=batch * 1000.0 / stats["mean"] if stats["mean"] > 0 else 0.0,
        peak_rss_mb=peak,
        rss_before_load_mb=rss_before,
        peak_rss_delta_mb=max(peak - rss_before, 0.0),
        size_bytes=artifact_size(ref),
        layers=layers,
        runtime_info={**info, "peak_rss_method": peak_method},
        host=host_info(),
    )


def _run_isolated(config: ProfileConfig) -> ProfileReport:
    with tempfile.TemporaryDirectory(prefix="medge-profile-") as tmp:
        cfg_path, out_path = Path(tmp) / "config.json", Path(tmp) / "report.json"
        cfg_path.write_text(json.dumps(asdict(config)))
        args = [sys.executable, "-m", "medge.devices.profiling", str(cfg_path), str(out_path)]
        if config.inputs:
            _save_samples(load_profile_samples(config), Path(tmp) / "inputs.npz")
            args.append(str(Path(tmp) / "inputs.npz"))
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
        )
        if not out_path.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"the profiling child process failed (exit {proc.returncode}):\n{tail}")
        data = json.loads(out_path.read_text())
    if "error" in data:
        raise MedgeError(data["error"])
    return report_from_dict(data)


def report_from_dict(data: dict[str, Any]) -> ProfileReport:
    """Rebuild a `ProfileReport` from its JSON form (from a child process or a remote device)."""
    known = set(ProfileReport.__dataclass_fields__)
    return ProfileReport(**{k: v for k, v in data.items() if k in known})


def profile_artifact(config: ProfileConfig) -> ProfileReport:
    """Profile `config.artifact` (a file or a bundle folder) on this machine."""
    validate_config(config)
    if config.isolate:
        return _run_isolated(config)
    return _profile_here(config)


def _child_main(cfg_path: str, out_path: str, prepared: str | None = None) -> int:
    config = ProfileConfig(**json.loads(Path(cfg_path).read_text()))
    try:
        report = _profile_here(config, prepared)
    except MedgeError as exc:
        write_json_atomic(out_path, {"error": str(exc)})
        return 1
    write_json_atomic(out_path, report.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(*sys.argv[1:4]))
