#!/usr/bin/env python
"""Run the research zoo models through every target with the real `medge` CLI and print the table
of issue 10: params/MACs, export parity, demo metric, INT8 metric drop on ORT and OpenVINO with
the nodes kept FP32/16-bit, Jetson explicit-Q/DQ TensorRT preflight, LiteRT delegate coverage.

    python scripts/research_zoo_table.py [--model NAME ...] [--out DIR] [--eval-size N]

Each step's JSON report is kept under ``DIR/<model>/``; a failing step is recorded with its
one-line error, not hidden.  Timings are on a shared machine and not the point of this table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

MODELS = ("cxr-medvit-kan", "us-dct-vit", "us-xlstm-unet", "ecg-mamba-3to12", "us-lesion-sam")
#: MONAI entries without weights: no metric gate (a random net's metric means nothing), parity gates only
WEIGHTLESS = ("us-swinunetr", "us-mednext", "us-unetr")
MAX_DROP = {"auroc": 0.005, "dice": 0.01, "pearson": 0.005}


def _medge(args: list[str], report: Path) -> tuple[dict | None, str]:
    exe = shutil.which("medge") or sys.executable
    cmd = ([exe] if exe.endswith("medge") else [exe, "-m", "medge_cli"]) + [str(a) for a in args] + ["--report", str(report)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    error = next((ln for ln in proc.stderr.splitlines() if ln.startswith("medge: error:")), "")
    data = json.loads(report.read_text()) if report.exists() else None
    if proc.returncode != 0 and not error:
        error = (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]
    return data, error


def _data(name: str, work: Path, n_eval: int) -> tuple[str, str]:
    """(calibration source, evaluation source) for a model: synthetic, or click .npz for the promptable one."""
    from medge.zoo import get_card

    card = get_card(name)
    if not card.extra_inputs:
        return f"synthetic:{card.synthetic_task}", f"synthetic:{card.synthetic_task}"
    import numpy as np

    from medge.calibration.synthetic import generate
    from medge.zoo.promptable import lesion_clicks

    pre = card.preprocessing
    paths = []
    for split, seed, n in (("calib", 1, 64), ("eval", 2, n_eval)):
        raw, masks = generate("us-seg", 3 * n, seed=seed + 100, size=pre["height"])
        keep = masks.reshape(len(masks), -1).any(1)
        raw, masks = raw[keep][:n], masks[keep][:n]
        image = ((raw[:, None] - pre["mean"][0]) / pre["std"][0]).astype(np.float32)
        path = work / f"{split}.npz"
        np.savez(path, image=image, point=lesion_clicks(masks, np.random.default_rng(seed)), masks=masks[:, None])
        paths.append(str(path))
    return paths[0], paths[1]


def run_model(name: str, out: Path, n_eval: int) -> dict:
    """Every step for one model; returns its table row (with errors where a step failed)."""
    from medge.evaluate.metrics import default_metric_for_task
    from medge.zoo import get_card

    card = get_card(name)
    work = out / name
    work.mkdir(parents=True, exist_ok=True)
    weighted = card.demo_metric is not None
    row: dict = {"model": name, "params": card.params, "macs": card.macs,
                 "demo_metric": (card.demo_metric or {}).get("value"), "metric": default_metric_for_task(card.task)}
    onnx_path = work / "model.onnx"
    exp, err = _medge(["export", name, "-o", onnx_path, "--dynamic-batch"], work / "export.json")
    parity = (exp or {}).get("parity") or {}
    row["parity_max_abs"] = parity.get("max_abs_error")
    row["parity_batches"] = parity.get("batch_sizes")
    row["parity_worst"] = [o.get("worst_input") for o in parity.get("outputs", [])]
    row["export_error"] = err
    if err:
        return row
    calib, evaluation = _data(name, work, n_eval)
    metric_gate = ["--eval", evaluation, "--max-drop", str(MAX_DROP[row["metric"]])] if weighted else []
    gate = ["--calib", calib, "--calib-size", "64", *metric_gate,
            *(["--eval-size", str(n_eval), "--bootstrap", "200"] if weighted else [])]
    for backend, suffix in (("ort", ".onnx"), ("openvino", ".xml")):
        rep, err = _medge(["quantize", onnx_path, "-o", work / f"int8-{backend}{suffix}", "--backend", backend, *gate],
                          work / f"quantize-{backend}.json")
        metric = (rep or {}).get("metric") or {}
        row[backend] = {"drop": metric.get("drop"), "reference": metric.get("reference"), "passed": metric.get("passed"),
                        "fp32_nodes": (rep or {}).get("fp32_fallback_nodes"),
                        "int16_tensors": (rep or {}).get("int16_activation_tensors"),
                        "output_head_fp32": (rep or {}).get("output_head_fp32"),
                        "scheme": (rep or {}).get("scheme"), "float_ops": (rep or {}).get("float_compute_ops"),
                        "error": err}
    jet, err = _medge(["compile", onnx_path, "--target", "jetson-orin-nano", "--precision", "int8", "--calib", calib,
                       "--option", "calib_samples=64", *metric_gate, "-o", work / "jetson"], work / "jetson.json")
    pre = (jet or {}).get("preflight") or {}
    row["trt"] = {"ok": pre.get("ok"), "unsupported": pre.get("unsupported"), "error": err,
                  "fp32_nodes": ((jet or {}).get("gate") or {}).get("fp32_fallback_nodes"),
                  "qdq": sum(n for op, n in (pre.get("op_counts") or {}).items() if op in ("QuantizeLinear",
                                                                                             "DequantizeLinear"))}
    lite, err = _medge(["compile", onnx_path, "--target", "android-qualcomm-npu", "--precision", "int8", "--calib",
                        calib, "--option", "calib_samples=32", "--option", "allow_unsupported=true",
                        "-o", work / "qnn"], work / "qnn.json")
    pre = (lite or {}).get("preflight") or {}
    row["tflite"] = {"coverage": pre.get("coverage"), "cpu_ops": pre.get("fallback"), "error": err}
    return row


def markdown(rows: list[dict]) -> str:
    """The issue's table."""
    def gate(g: dict) -> str:
        if g.get("error"):
            return f"failed: {g['error'][:120]}"
        kept = (g.get("fp32_nodes") or []) + (g.get("output_head_fp32") or [])
        head = "no metric gate (no weights)" if g.get("drop") is None else \
            f"{g['drop']:+.4f} ({'pass' if g['passed'] else 'FAIL'})"
        text = (f"{head}; FP32: {len(kept)} ({', '.join(kept[:4])}{'…' if len(kept) > 4 else ''}); "
                f"16-bit act: {len(g.get('int16_tensors') or [])}")
        if g.get("scheme"):
            text += f"; scheme {g['scheme']}"
        if g.get("float_ops"):
            text += f"; float matmul/conv: {', '.join(g['float_ops'][:4])}{'…' if len(g['float_ops']) > 4 else ''}"
        return text

    lines = ["| model | params | MACs | parity max abs | demo metric | INT8 drop ORT | INT8 drop OpenVINO | TRT preflight | tflite (QNN) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("export_error"):
            lines.append(f"| {r['model']} | {r['params']} | {r['macs']} | export failed: {r['export_error']} | | | | | |")
            continue
        trt = r["trt"]
        lite = r["tflite"]
        trt_text = (f"clean, {trt.get('qdq')} Q/DQ, FP32 nodes: {len(trt.get('fp32_nodes') or [])}" if trt.get("ok")
                    else f"not clean: {trt.get('unsupported') or trt.get('error')}")
        if trt.get("error"):
            trt_text += f" (compile failed: {trt['error'][:100]})"
        cpu = Counter(op["op"] if isinstance(op, dict) else str(op) for op in lite.get("cpu_ops") or [])
        lite_text = (f"{lite['coverage']:.0%} on NPU; CPU: {', '.join(f'{k}×{n}' for k, n in cpu.most_common()) or '-'}"
                     if lite.get("coverage") is not None else f"failed: {lite.get('error')}")
        demo = f"{r['metric']} {r['demo_metric']:.3f}" if r["demo_metric"] is not None else "no weights"
        lines.append(f"| {r['model']} | {r['params']:,} | {r['macs']:,} | {r['parity_max_abs']:.2g} "
                     f"(batch {'+'.join(map(str, r.get('parity_batches') or []))}) | "
                     f"{demo} | {gate(r['ort'])} | {gate(r['openvino'])} | {trt_text} | {lite_text} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=MODELS + WEIGHTLESS, help="model(s) (default: all)")
    parser.add_argument("--out", type=Path, default=Path("build/research-zoo"), help="work folder")
    parser.add_argument("--eval-size", type=int, default=100, help="evaluation samples per gate (default 100)")
    args = parser.parse_args(argv)
    rows = []
    for name in args.model or MODELS + WEIGHTLESS:
        print(f"{name} …", file=sys.stderr, flush=True)
        rows.append(run_model(name, args.out, args.eval_size))
        (args.out / "table.json").write_text(json.dumps(rows, indent=2, default=str))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
