"""Side-by-side latency benchmark at batch 1, measured in one run on one machine with fixed threads.

For each model (demo chest X-ray classifier, full DenseNet-121, ultrasound U-Net) it times:
  * PyTorch eager FP32;
  * ONNX Runtime FP32 of the exported ONNX;
  * a hand-written NNCF + OpenVINO default INT8 of the same ONNX (the best peer path a user would
    otherwise write: `nncf.quantize` with defaults, compiled for CPU with the LATENCY hint);
  * every medge target artifact that runs on this machine (built with `medge.devices.compile_model`).
Every candidate is timed by the same loop (warm-up, then `--runs` timed calls, median and p90), in
interleaved rounds so that load from other tenants of a shared machine hits every candidate alike.
LiteRT artifacts for phone NPUs are timed on this CPU with XNNPACK (the delegate needs the phone).
It prints latency ratios and the fraction of the compute floor: model MACs over a measured
INT8/FP32 GEMM peak of this CPU (bench/compute_floor.py).

    python bench/bench_latency.py [--models ...] [--targets ...] [--runs 50] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compute_floor import gemm_peaks  # noqa: E402

MODELS = ("cxr-densenet-tiny", "cxr-densenet121", "us-lesion-unet")
# Targets whose artifacts run on this x86 CPU; the NPU/Jetson artifacts need their device.
TARGETS = ("intel-cpu", "local", "raspberry-pi-5", "raspberry-pi-5:runtime=litert", "android-qualcomm-npu")
CALIB_SIZE = 100


def time_interleaved(candidates: dict[str, Callable[[], Any]], warmup: int, runs: int,
                     rounds: int = 5) -> dict[str, dict[str, float]]:
    """Median and p90 (ms) of `runs` calls per candidate, taken in `rounds` interleaved slices.

    Every candidate is timed in each round, one after the other, so that load from other tenants
    of a shared machine hits all of them alike instead of whichever ran during the spike.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for name, fn in candidates.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for name, values in samples.items():
        values.sort()
        out[name] = {"p50": statistics.median(values), "p90": values[int(0.9 * (len(values) - 1))]}
    return out


def torch_eager(model: str, shape, threads: int) -> Callable[[], Any]:
    import torch

    from medge.export import load_model

    torch.set_num_threads(threads)
    module = load_model(model).module
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))

    def run():
        with torch.inference_mode():
            return module(x)
    return run


def runtime_call(stack: contextlib.ExitStack, artifact, runtime: str, device: str, threads: int) -> Callable[[], Any]:
    from medge.runtimes import open_runtime
    from medge.runtimes.feeds import random_inputs

    rt = stack.enter_context(open_runtime(artifact, runtime, device=device, threads=threads))
    feeds = random_inputs(rt.inputs(), seed=0, count=1)[0]
    return lambda: rt.infer(feeds)


def nncf_openvino_int8(onnx_path: Path, calib, threads: int) -> Callable[[], Any]:
    """The peer path: NNCF default PTQ on the ONNX, OpenVINO CPU with the LATENCY hint."""
    import nncf
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(onnx_path))
    quantized = nncf.quantize(model, nncf.Dataset(list(calib)), subset_size=len(calib))
    compiled = core.compile_model(quantized, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    feeds = next(iter(calib))
    return lambda: request.infer(feeds)


def _target_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``raspberry-pi-5:runtime=litert`` → ("raspberry-pi-5", {"runtime": "litert"})."""
    target, _, opts = spec.partition(":")
    return target, dict(o.split("=", 1) for o in opts.split(",") if o)


def bench_model(model: str, targets, threads: int, warmup: int, runs: int, work: Path) -> list[dict]:
    from medge.calibration import load_data_for_onnx
    from medge.devices.compile import CompileConfig, compile_model
    from medge.export import export_onnx
    from medge.runtimes.artifacts import resolve_artifact

    onnx_path = work / f"{model}.onnx"
    exported = export_onnx(model, onnx_path)
    shape = tuple(exported.inputs[0]["shape"])
    calib = load_data_for_onnx("synthetic", onnx_path, n=CALIB_SIZE, split="calib")
    rows: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        calls = {
            "pytorch eager fp32": torch_eager(model, shape, threads),
            "onnxruntime fp32": runtime_call(stack, onnx_path, "onnxruntime", "cpu", threads),
            "nncf+openvino int8 (hand-written)": nncf_openvino_int8(onnx_path, calib, threads),
        }
        for name in calls:
            rows[name] = {"candidate": name, "precision": "fp32" if "fp32" in name else "int8"}
        for spec in targets:
            target, options = _target_spec(spec)
            bundle = work / f"{model}-{spec.replace(':', '-').replace('=', '-')}"
            try:
                report = compile_model(CompileConfig(model=onnx_path, target=target, output=bundle, precision="int8",
                                                     calib_source="synthetic", model_ref=model, options=options))
                ref = resolve_artifact(bundle)
                # NPU/GPU delegates need their device: time the same .tflite on this CPU (XNNPACK)
                device = "cpu" if ref.runtime == "litert" else (ref.device or "cpu")
                name = f"medge {spec} int8 ({ref.runtime} {device.lower()})"
                calls[name] = runtime_call(stack, ref.path, ref.runtime, device, threads)
                rows[name] = {"candidate": name, "precision": "int8", "size_bytes": sum(report.files.values())}
            except Exception as exc:  # noqa: BLE001 - a bench row must not stop the others
                name = f"medge {spec} int8"
                rows[name] = {"candidate": name, "precision": "int8", "error": str(exc).splitlines()[0][:160]}
        for name, timing in time_interleaved(calls, warmup, runs).items():
            rows[name].update(timing)
    for row in rows.values():
        row.update(model=model, macs=exported.macs)
    return list(rows.values())


LITERT_TARGETS = ("android-qualcomm-npu", "android-mediatek-npu")
# The delegate op table of each LiteRT NPU target (profiles.json compile_options.delegate).
LITERT_DELEGATES = {"android-qualcomm-npu": "qnn", "android-mediatek-npu": "neuron"}


def _litert_row(model: str, target: str, report: dict, manifest: dict, p50: float, ort: float | None,
                preflight: dict | None = None) -> dict:
    """One table row from a LiteRT bundle's report and manifest (`preflight`: another delegate's)."""
    pre, gate, lit = preflight or report["preflight"], report["gate"] or {}, manifest["extra"]["litert"]
    share = pre.get("delegated_macs_share") or 0.0
    return {
        "model": model, "target": target, "metric": gate.get("name"), "drop": gate.get("drop"),
        "passed": gate.get("passed"), "attempts": len(gate.get("ladder", [])), "ops": lit.get("op_precisions"),
        "coverage": pre["coverage"], "partitions": pre["partitions"], "p50": p50, "ort_int8_p50": ort,
        "vs_ort_int8": ort / p50 if ort else None,
        "npu_bound_delegated_ms": p50 * share, "npu_bound_cpu_ms": p50 * (1 - share),
        "same_tflite_as": None if preflight is None else LITERT_TARGETS[0],
    }


def litert_zoo_rows(threads: int, warmup: int, runs: int, work: Path, models: list[str] | None = None,
                    compile_every_target: bool = False,
                    on_rows: Callable[[list[dict]], None] = lambda _rows: None) -> list[dict]:
    """One row per zoo model with weights and LiteRT NPU target: metric drop, ops per precision,
    delegate coverage and partitions, and the .tflite's CPU-interpreter latency against the ORT
    INT8 bundle (raspberry-pi-5, uint8 QDQ) timed in the same interleaved rounds.

    The ladder's choice does not depend on the delegate (the gate is the metric and parity; the
    same inputs give the same bytes), so by default the MediaTek row is the Qualcomm bundle's
    .tflite with the MediaTek delegate's preflight (``same_tflite_as``);
    `compile_every_target` compiles it again instead.  `on_rows` gets the rows so far after each
    model (a long run keeps what it measured).

    The NPU-bound estimate splits the measured interpreter time by the share of the model's work
    (MACs) that the delegate takes: ``delegated ms`` would move to the NPU, ``cpu ms`` stays on
    the CPU in every case (the CPU fallbacks), so the device can never beat ``cpu ms``.
    """
    import json as _json

    from medge.devices.compile import CompileConfig, compile_model
    from medge.devices.delegate_ops import litert_preflight
    from medge.devices.recipes.litert.convert import tflite_ops
    from medge.export import export_onnx
    from medge.runtimes.artifacts import resolve_artifact
    from medge.zoo import MODELS, weights_path

    rows: list[dict] = []
    compiled = (*LITERT_TARGETS, "raspberry-pi-5") if compile_every_target else (LITERT_TARGETS[0], "raspberry-pi-5")
    for model in models or MODELS.names():
        path = weights_path(model)
        if path is None or not path.is_file():
            continue
        onnx_path = work / f"{model}.onnx"
        try:
            export_onnx(model, onnx_path)
        except Exception as exc:  # noqa: BLE001 - a bench row must not stop the others
            rows.append({"model": model, "error": str(exc).splitlines()[0][:160]})
            on_rows(rows)
            continue
        with contextlib.ExitStack() as stack:
            calls, found = {}, {}
            for target in compiled:
                bundle = work / f"{model}-{target}"
                t0 = time.perf_counter()
                try:
                    report = compile_model(CompileConfig(model=onnx_path, target=target, output=bundle, precision="int8",
                                                         calib_source="synthetic", eval_source="synthetic",
                                                         max_drop=0.01 if "segment" in _task(onnx_path) else 0.005,
                                                         model_ref=model))
                except Exception as exc:  # noqa: BLE001
                    rows.append({"model": model, "target": target, "error": " ".join(str(exc).split())[:300]})
                    continue
                print(f"# {model} {target}: compiled in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
                ref = resolve_artifact(bundle)
                calls[target] = runtime_call(stack, ref.path, ref.runtime, "cpu", threads)
                found[target] = (ref.path, report.to_dict(), _json.loads((bundle / "manifest.json").read_text()))
            timing = time_interleaved(calls, warmup, runs) if calls else {}
        ort = timing.get("raspberry-pi-5", {}).get("p50")
        for target in LITERT_TARGETS:
            if target in found:
                _, rep, manifest = found[target]
                rows.append(_litert_row(model, target, rep, manifest, timing[target]["p50"], ort))
            elif LITERT_TARGETS[0] in found and not compile_every_target:
                artifact, rep, manifest = found[LITERT_TARGETS[0]]
                pre = litert_preflight(tflite_ops(artifact), LITERT_DELEGATES[target])
                rows.append(_litert_row(model, target, rep, manifest, timing[LITERT_TARGETS[0]]["p50"], ort, pre))
        on_rows(rows)
    return rows


def _task(onnx_path: Path) -> str:
    """The task recorded in the ONNX file's medge metadata."""
    from medge.common.metadata import read_metadata

    return read_metadata(onnx_path).task


def print_litert_rows(rows: list[dict]) -> None:
    """The LiteRT table: one row per zoo model and NPU target."""
    header = (f"{'model':<18} {'target':<21} {'metric':>8} {'drop':>8} {'gate':>4} {'int8/16/fp':>10} {'cover':>6} {'parts':>5} "
              f"{'p50 ms':>8} {'ORT/LiteRT':>10} {'NPU-bound ms (deleg / cpu)':>27}")
    print(header)
    print("-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<18} {r.get('target', '-'):<21} error: {r['error']}")
            continue
        ops = r["ops"] or {}
        prec = f"{ops.get('int8', 0)}/{ops.get('int16', 0)}/{ops.get('float', 0)}"
        ratio = f"{r['vs_ort_int8']:.2f}x" if r["vs_ort_int8"] else "-"
        gate = "pass" if r["passed"] else "FAIL"
        print(f"{r['model']:<18} {r['target']:<21} {r['metric'] or '-':>8} "
              f"{r['drop'] if r['drop'] is not None else float('nan'):8.4f} {gate:>4} {prec:>10} "
              f"{r['coverage']:6.3f} {r['partitions']:5d} {r['p50']:8.2f} {ratio:>10} "
              f"{r['npu_bound_delegated_ms']:12.2f} / {r['npu_bound_cpu_ms']:8.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", help="also write the rows as JSON to this path")
    parser.add_argument("--litert-zoo", action="store_true",
                        help="only the LiteRT NPU table: every zoo model with weights, both NPU targets")
    parser.add_argument("--litert-models", nargs="+", help="with --litert-zoo: only these zoo models")
    parser.add_argument("--litert-compile-every-target", action="store_true",
                        help="with --litert-zoo: compile the MediaTek bundle too instead of reusing the Qualcomm .tflite")
    args = parser.parse_args(argv)
    if args.litert_zoo:
        def save(rows: list[dict]) -> None:
            if args.json:
                Path(args.json).write_text(json.dumps({"litert": rows}, indent=2))

        with tempfile.TemporaryDirectory(prefix="medge-bench-litert-") as tmp:
            litert = litert_zoo_rows(args.threads, args.warmup, args.runs, Path(tmp), args.litert_models,
                                     args.litert_compile_every_target, on_rows=save)
        print_litert_rows(litert)
        return 0

    peaks = gemm_peaks(args.threads)
    print(f"GEMM peak on this CPU ({args.threads} threads): fp32 {peaks['fp32'] / 1e9:.1f} GMAC/s, "
          f"int8 {peaks['int8'] / 1e9:.1f} GMAC/s")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="medge-bench-") as tmp:
        for model in args.models:
            rows += bench_model(model, args.targets, args.threads, args.warmup, args.runs, Path(tmp))
    _print(rows, peaks)
    if args.json:
        Path(args.json).write_text(json.dumps({"peaks": peaks, "rows": rows}, indent=2))
    return 0


def _print(rows: list[dict], peaks: dict[str, float]) -> None:
    header = f"{'model':<18} {'candidate':<56} {'p50 ms':>8} {'p90 ms':>8} {'vs eager':>8} {'floor %':>8}"
    print(header)
    print("-" * len(header))
    for model in dict.fromkeys(r["model"] for r in rows):
        group = [r for r in rows if r["model"] == model]
        eager = next(r["p50"] for r in group if r["candidate"].startswith("pytorch"))
        for r in group:
            if "error" in r:
                print(f"{model:<18} {r['candidate']:<56} {'—':>8} {'—':>8} {'—':>8} {'—':>8}  ({r['error']})")
                continue
            floor_ms = r["macs"] / peaks[r["precision"]] * 1e3 if r.get("macs") else float("nan")
            print(f"{model:<18} {r['candidate']:<56} {r['p50']:8.2f} {r['p90']:8.2f} {eager / r['p50']:7.2f}x "
                  f"{100 * floor_ms / r['p50']:7.1f}%")
        _goals(model, group, eager)


def _goals(model: str, group: list[dict], eager: float) -> None:
    def p50(prefix: str):
        return next((r["p50"] for r in group if r["candidate"].startswith(prefix) and "p50" in r), None)

    intel, peer = p50("medge intel-cpu"), p50("nncf+openvino")
    litert = p50("medge android-qualcomm-npu") or p50("medge raspberry-pi-5:runtime=litert")
    checks = []
    if intel:
        checks.append(f"intel-cpu INT8 vs eager {eager / intel:.2f}x (goal ≥ 4x: {'MET' if eager / intel >= 4 else 'NOT MET'})")
    if intel and peer:
        checks.append(f"intel-cpu INT8 / NNCF-OV latency {intel / peer:.3f} (goal ≤ 1.05: {'MET' if intel / peer <= 1.05 else 'NOT MET'})")
    if litert:
        checks.append(f"LiteRT INT8 vs eager {eager / litert:.2f}x (goal ≥ 3x: {'MET' if eager / litert >= 3 else 'NOT MET'})")
    for line in checks:
        print(f"  goal [{model}] {line}")


if __name__ == "__main__":
    sys.exit(main())
