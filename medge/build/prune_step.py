"""The pruning step of `medge build --prune auto|S`: prune → distil → gate before export.

`prune_for_build` runs ``medge prune`` on the model (distillation data: ``--prune-data`` or the
model's synthetic generator) and hands the pruned ``.pt2`` to the rest of the chain.  The metric
budget (``--max-drop``, default per metric) is shared: pruning may spend `PRUNE_SHARE` of it, and
the INT8 gate gets what pruning left, so that pruned+INT8 stays within the budget of the dense
FP32 model.  `compare_dense` profiles the dense and pruned FP32 models on the target runtime and
fills the report's dense / pruned / pruned+INT8 table.

Channel counts are rounded to the target's channel multiple (``channel_multiple`` in
``medge/devices/profiles.json``, `DeviceProfile.channel_multiple_for`) because runtimes compute
channels in blocks: a layer pruned from 64 to 37 channels costs the same as 48 on a 16-wide
kernel, so MACs would fall while latency does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medge.common.errors import MedgeError, UsageError
from medge.devices.profiling import ProfileConfig, profile_artifact
from medge.export import export_onnx, load_model
from medge.prune.pruner import ChannelPruningError, PruneConfig, prune_model

if TYPE_CHECKING:
    from medge.devices.target import DeviceProfile

PRUNE_SHARE = 0.6


def parse_prune(text: str | None) -> float | None | str:
    """``--prune`` value: "auto", a sparsity in (0, 0.95], or None (no pruning)."""
    if text is None:
        return None
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--prune must be 'auto' or a sparsity such as 0.3 (got '{text}')") from None
    if not 0.0 < value <= 0.95:
        raise UsageError(f"--prune sparsity must be in (0, 0.95] (got {value:g}); or use --prune auto")
    return value


@dataclass
class PrunedForBuild:
    """What the rest of the chain needs from the pruning step."""

    pt2: Path
    report: dict[str, Any]
    budget: float | None  # the whole --max-drop vs dense FP32
    int8_budget: float | None  # what pruning left for quantization
    round_to: int


def prune_for_build(config, target: DeviceProfile, precision: str, report_dir: Path) -> PrunedForBuild:
    """Prune, distil and gate `config.model`; the .pt2 goes to ``report_dir/model.pruned.pt2``."""
    from medge.evaluate.gate import DEFAULT_MAX_DROP
    from medge.prune.gate import metric_for

    sparsity = parse_prune(config.prune)
    loaded = load_model(config.model, config.weights, config.model_kwargs, config.input_shape)
    data = config.prune_data or _synthetic_source(loaded.meta)
    if data is None:
        raise UsageError(f"cannot tell which data to distil '{config.model}' on; pass --prune-data SOURCE "
                         "(a folder of the model's images, labelled or not, or synthetic:<task>)")
    metric = metric_for(loaded.meta.task, None)
    budget = config.max_drop if config.max_drop is not None else DEFAULT_MAX_DROP.get(metric)
    round_to = config.round_to or target.channel_multiple_for(precision)
    options = dict(config.prune_options or {})
    if config.threads is not None:
        options.setdefault("threads", config.threads)
    prune_config = PruneConfig(
        model=config.model, output=str(report_dir / "model.pruned.pt2"),
        sparsity=None if sparsity == "auto" else float(sparsity), weights=config.weights,
        model_kwargs=config.model_kwargs, input_shape=config.input_shape, finetune=data,
        eval=config.eval, max_drop=None if budget is None else PRUNE_SHARE * budget, round_to=round_to,
        measure_onnx=False, **options,
    )
    try:
        result = prune_model(prune_config)
    except ChannelPruningError as exc:  # its own hint (--mode unstructured) is a `medge prune` flag
        raise MedgeError(f"{exc.reason}; build it without --prune (INT8 alone), or prune its weights with "
                         "'medge prune --mode unstructured' (smaller files, no speed-up on CPU)") from None
    gate = result.gate or {}
    spent = gate.get("drop")
    int8_budget = None if budget is None or spent is None else round(max(budget - max(spent, 0.0), 0.0), 6)
    return PrunedForBuild(Path(prune_config.output), result.to_dict(), budget, int8_budget, round_to)


def _synthetic_source(meta) -> str | None:
    from medge.calibration.synthetic_source import infer_task

    try:
        return f"synthetic:{infer_task(meta)}"
    except MedgeError:
        return None


def _latency(profile: dict[str, Any]) -> float | None:
    return (profile.get("latency_ms") or {}).get("p50")


def compare_dense(config, target, pruned: PrunedForBuild, dense_onnx: Path, pruned_onnx: Path,
                  report) -> dict[str, Any]:
    """Dense vs pruned vs pruned+INT8 (metric, MACs, size, latency on the target runtime) for the report.

    The FP32 models are timed on random inputs (latency does not depend on the values) with the
    build's warm-up, runs and threads.
    """
    def profile(path: str, runtime: str):
        return profile_artifact(ProfileConfig(artifact=path, runtime=runtime, threads=config.threads,
                                              warmup=config.warmup, runs=config.runs))

    export_onnx(config.model, dense_onnx, weights=config.weights, model_kwargs=config.model_kwargs,
                input_shape=config.input_shape)
    runtime = target.runtime if target.runtime in ("openvino", "onnxruntime") else "onnxruntime"
    dense_p = profile(str(dense_onnx), runtime).to_dict()
    pruned_p = profile(str(pruned_onnx), runtime).to_dict()
    bundle_p = next((p for p in report.profiles if p.get("artifact") == str(config.output)), None)
    r = pruned.report
    gate = r.get("gate") or {}
    int8_gate = (report.compile.get("gate") or {})
    int8_metric = int8_gate.get("metric") if isinstance(int8_gate.get("metric"), dict) else int8_gate
    macs = r.get("macs") or {}
    rows = {
        "dense": {"metric": gate.get("reference"), "macs": macs.get("before"), "size_bytes": dense_p.get("size_bytes"),
                  "latency_ms": _latency(dense_p), "runtime": dense_p.get("runtime")},
        "pruned": {"metric": gate.get("pruned"), "macs": macs.get("after"), "size_bytes": pruned_p.get("size_bytes"),
                   "latency_ms": _latency(pruned_p), "runtime": pruned_p.get("runtime")},
        f"pruned+{report.precision}": {
            "metric": (int8_metric or {}).get("quantized"), "macs": macs.get("after"),
            "size_bytes": bundle_p.get("size_bytes") if bundle_p else None,
            "latency_ms": _latency(bundle_p) if bundle_p else None,
            "runtime": bundle_p.get("runtime") if bundle_p else None},
    }
    out: dict[str, Any] = {
        "sparsity": r.get("sparsity"), "search": r.get("search"), "round_to": pruned.round_to,
        "metric": gate.get("name"), "max_drop": pruned.budget, "prune_share": PRUNE_SHARE,
        "int8_max_drop": pruned.int8_budget, "rows": rows, "probes": r.get("probes"), "gate": gate,
        "settings": r.get("settings"),
        "distillation_seconds": (r.get("distillation") or {}).get("seconds"),
        "teacher_sha256": r.get("teacher_sha256"), "pruned_sha256": r.get("sha256"), "notes": [],
    }
    final = rows[f"pruned+{report.precision}"]["metric"]
    if final is not None and gate.get("reference") is not None:
        from medge.evaluate.metrics import metric_drop

        out["drop_vs_dense"] = round(metric_drop(gate["name"], gate["reference"], final), 6)
        out["notes"].append("the pruning gate and the INT8 gate each score on their own synthetic/held-out "
                            "evaluation draw; drop_vs_dense compares the two")
    if not int8_metric:
        out["notes"].append(f"the {report.precision} bundle was not gated: no labelled evaluation data for this "
                            "model (pass --eval SOURCE); the pruning gate used the held-out part of --prune-data")
    out["notes"].extend(_macs_vs_latency(rows, pruned.round_to))
    return out


def _macs_vs_latency(rows: dict[str, dict[str, Any]], round_to: int) -> list[str]:
    dense, pruned = rows["dense"], rows["pruned"]
    if not (dense["macs"] and pruned["macs"] and dense["latency_ms"] and pruned["latency_ms"]):
        return []
    mac_ratio = pruned["macs"] / dense["macs"]
    lat_ratio = pruned["latency_ms"] / dense["latency_ms"]
    if mac_ratio < 0.8 and lat_ratio > 0.9:
        return [(f"MACs fell to {mac_ratio:.2f}x of dense but FP32 latency only to {lat_ratio:.2f}x on "
                 f"{pruned['runtime']}: the runtime does not turn these channel cuts into speed (channels were "
                 f"rounded to multiples of {round_to}; try --round-to {round_to * 2} or a higher sparsity)")]
    return [f"MACs {mac_ratio:.2f}x and FP32 latency {lat_ratio:.2f}x of dense on {pruned['runtime']}"]

