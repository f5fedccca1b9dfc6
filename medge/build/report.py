"""Write the `medge build` report as Markdown, JSON and a PNG latency/accuracy chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medge.common.fileio import atomic_path, write_bytes_atomic, write_json_atomic
from medge.common.reports import details_row, human_bytes, verdict


def _num(value: float) -> str:
    """4 significant digits, more when those would round a value to exactly 1 (a cosine of 0.99999999)."""
    text = f"{value:.4g}"
    return f"{value:.10g}" if float(text) == 1.0 and value != 1.0 else text


def _gate_and_metric_rows(report) -> list[tuple[str, str]]:
    """The gate in its own terms (a task metric, or parity with FP32 on the inputs it used) and the task
    metric (Dice, AUROC, …) that `compare` measured on the evaluation data, even when the gate is parity."""
    rows: list[tuple[str, str]] = []
    gate = report.compile.get("gate") or {}
    metric = gate.get("metric") if isinstance(gate.get("metric"), dict) else gate
    parity = gate.get("parity") if isinstance(gate.get("parity"), dict) else {}
    if metric and metric.get("name") and metric.get("quantized") is not None:
        rows.append(("gate", f"{metric['name']} fp32 {_num(metric.get('reference', float('nan')))} → {report.precision} "
                             f"{_num(metric['quantized'])}, drop {metric.get('drop', float('nan')):.4g} "
                             f"(max {metric.get('max_drop')}) {'PASS' if metric.get('passed') else 'FAIL'}"))
    elif parity.get("min_cosine") is not None:
        source = (parity.get("data") or {}).get("source") or "calibration"
        pearson = f", min pearson {_num(parity['min_pearson'])}" if parity.get("min_pearson") is not None else ""
        rows.append(("gate", f"parity with fp32 onnx on {parity.get('samples', '?')} {source} inputs (no task metric): "
                             f"min cosine {_num(parity['min_cosine'])}{pearson} "
                             f"{'PASS' if gate.get('passed', parity.get('passed')) else 'FAIL'}"))
    compare = report.compare or {}
    measured = [a for a in compare.get("artifacts", []) if a.get("metric") is not None]
    if compare.get("metric_name") and compare.get("reference_metric") is not None and measured:
        rows.append((compare["metric_name"], f"fp32 onnx {_num(compare['reference_metric'])} → bundle "
                                             f"{_num(measured[0]['metric'])} on {compare.get('n_inputs', '?')} samples "
                                             f"of {compare.get('inputs_source', 'the evaluation data')}"))
    return rows


def build_rows(report) -> list[tuple[str, str]]:
    """The printed summary of `medge build`: verdict first, about ten lines (the rest is in the JSON)."""
    failed = [s for s in report.steps if s["status"] == "failed"]
    if failed:
        head = verdict(False, f"step '{failed[0]['step']}' failed: {failed[0].get('note') or 'see the JSON report'}")
    elif report.error:
        head = verdict(False, report.error)
    else:
        head = verdict(True, f"bundle {report.bundle} ({report.precision}) for {report.target}")
    rows = [("result", head), *(("WARNING", w) for w in report.warnings)]
    rows.append(("steps", ", ".join(f"{s['step']} {s['status']} {s['seconds']:.1f} s" for s in report.steps)))
    skipped = [s for s in report.steps if s["status"] == "skipped" and s.get("note")]
    if skipped:
        rows.append(("skipped", f"{skipped[0]['step']}: {skipped[0]['note']}"))
    summary = report.summary
    rows += _gate_and_metric_rows(report)
    if "cosine vs fp32" in summary:
        rows.append(("parity vs fp32", f"max abs {summary['max abs error vs fp32']:.3g}, cosine {summary['cosine vs fp32']:.6f}"))
    if "p50 bundle (ms)" in summary:
        rows.append(("latency p50", f"fp32 onnx {summary['p50 fp32 onnx (ms)']:.3f} ms → bundle {summary['p50 bundle (ms)']:.3f} ms "
                                    f"({summary['speed-up vs fp32 onnx']:.2f}x)"))
    sizes = [p.get("size_bytes") for p in report.profiles]
    if len(sizes) >= 2 and sizes[0] and sizes[1]:
        rows.append(("size", f"fp32 onnx {human_bytes(sizes[0])} → bundle {human_bytes(sizes[1])}"))
    if report.compile.get("manifest_sha256"):
        rows.append(("manifest sha256", report.compile["manifest_sha256"]))
    if report.report_files.get("markdown"):
        rows.append(("report", f"{report.report_files['markdown']} (+ json, png)"))
    rows.append(("time", f"{report.seconds:.1f} s"))
    return rows + [details_row()]


def _markdown(report) -> str:
    lines = [
        f"# medge build: {report.model} → {report.target}",
        "",
        f"Bundle: `{report.bundle}` · precision **{report.precision}** · {report.seconds:.1f} s",
        "",
        "| step | status | seconds | note |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']:.1f} | {s.get('note', '')} |" for s in report.steps]
    if report.summary:
        lines += ["", "## Summary", "", "| quantity | value |", "|---|---|"]
        lines += [f"| {k} | {_num(v)} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in report.summary.items()]
    accuracy = _gate_and_metric_rows(report)
    if accuracy:
        lines += ["", "## Gate and task metric", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in accuracy]
    if report.profiles:
        lines += ["", "## Latency (ms)", "", "| artifact | runtime | device | p50 | p90 | p99 | mean ± std | peak RSS MB | size MB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for p in report.profiles:
            lat = p.get("latency_ms", {})
            lines.append(
                f"| {Path(str(p.get('artifact', ''))).name} | {p.get('runtime')} | {p.get('device')} | "
                f"{lat.get('p50', 0):.3f} | {lat.get('p90', 0):.3f} | {lat.get('p99', 0):.3f} | "
                f"{lat.get('mean', 0):.3f} ± {lat.get('std', 0):.3f} | {p.get('peak_rss_mb', 0):.0f} | "
                f"{(p.get('size_bytes') or 0) / 1e6:.2f} |"
            )
    notes = report.compile.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += ["", "_Demo models are trained on synthetic data and are not for clinical use._", ""]
    return "\n".join(lines)


def _chart(report, path: Path) -> bool:
    """Latency bars (p50, whisker to p90) and metric bars; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_lat, ax_met) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = [f"{Path(str(p.get('artifact', ''))).name}\n({p.get('runtime')})" for p in report.profiles]
    p50 = [p.get("latency_ms", {}).get("p50", 0.0) for p in report.profiles]
    p90 = [p.get("latency_ms", {}).get("p90", 0.0) for p in report.profiles]
    ax_lat.bar(range(len(p50)), p50, yerr=[[0] * len(p50), [b - a for a, b in zip(p50, p90)]], capsize=4,
               color=["#8c8c8c", "#1f77b4", "#2ca02c"][: len(p50)])
    ax_lat.set_xticks(range(len(p50)), names, fontsize=7)
    ax_lat.set_ylabel("latency p50 (ms), whisker p90")
    ax_lat.set_title("latency")
    gate = report.compile.get("gate") or {}
    metric: dict[str, Any] = gate.get("metric") if isinstance(gate.get("metric"), dict) else gate
    if metric and metric.get("reference") is not None and metric.get("quantized") is not None:
        values = [metric["reference"], metric["quantized"]]
        ax_met.bar([0, 1], values, color=["#8c8c8c", "#1f77b4"])
        ax_met.set_xticks([0, 1], ["fp32", report.precision])
        low = min(values)
        ax_met.set_ylim(max(0.0, low - 0.05), min(1.0, max(values) + 0.02) if max(values) <= 1 else max(values) * 1.05)
        ax_met.set_title(f"{metric.get('name')} (drop {metric.get('drop', 0):.4f}, max {metric.get('max_drop')})")
    else:
        ax_met.text(0.5, 0.5, "no accuracy gate\n(no eval data or not int8)", ha="center", va="center")
        ax_met.set_axis_off()
    fig.suptitle(f"{report.model} → {report.target}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True


def write_build_report(report, folder: Path, error: str | None = None) -> dict[str, str]:
    """Write build_report.{md,json,png} into `folder` (the JSON is what ``--report`` gets, with the
    `error` of a failed build); returns {kind: path}."""
    files = {"markdown": folder / "build_report.md", "json": folder / "build_report.json",
             "chart": folder / "latency_accuracy.png"}
    written = {"markdown": str(files["markdown"]), "json": str(files["json"])}
    if _chart(report, files["chart"]):
        written["chart"] = str(files["chart"])
    report.report_files = written
    write_bytes_atomic(files["markdown"], _markdown(report).encode())
    data = {"ok": bool(report.ok) and error is None, **report.to_dict()}
    if error is not None:
        data["ok"], data["error"] = False, error
    write_json_atomic(files["json"], data)
    return written
