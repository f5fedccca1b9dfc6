"""Accelerator op coverage: which ops of a model run on the NPU/GPU and which fall back to the CPU.

The tables are data (``delegate_ops.json``): per LiteRT delegate (``qnn``, ``neuron``, ``gpu``,
``xnnpack``) the TFLite builtin ops it takes and the tensor dtypes it accepts; per OpenVINO device
without a local plugin (``GPU``, ``NPU``) the opset ops it cannot run.  `litert_preflight` checks
the ops read from a .tflite; `openvino_preflight` asks ``core.query_model`` when the device exists
here and uses the table otherwise.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from medge.common.errors import UnknownNameError, did_you_mean

TABLES_FILE = Path(__file__).with_name("delegate_ops.json")


@lru_cache(maxsize=1)
def _tables() -> dict[str, Any]:
    return json.loads(TABLES_FILE.read_text())


def delegate_names() -> list[str]:
    """Names of the LiteRT delegates that have an op table."""
    return sorted(_tables()["tables"])


def delegate_table(delegate: str) -> dict[str, Any]:
    """The op table of LiteRT `delegate` (``ops``, ``dtypes``, ``max_rank``, ``device``, ``note``)."""
    tables = _tables()["tables"]
    if delegate not in tables:
        raise UnknownNameError(
            f"no op table for delegate '{delegate}';{did_you_mean(delegate, tables)} choices: {', '.join(sorted(tables))}"
        )
    return tables[delegate]


def _fallback_reason(op: dict[str, Any], table: dict[str, Any], float_as_fp16: bool) -> str | None:
    if op["op"] not in table["ops"]:
        return f"{op['op']} is not supported by the delegate"
    dtypes = set(op["input_dtypes"] + op["output_dtypes"])
    if float_as_fp16 and "float32" in dtypes:
        dtypes = (dtypes - {"float32"}) | {"float16"}
    bad = sorted(dtypes - set(table["dtypes"]))
    if bad:
        return f"{op['op']} with {'/'.join(bad)} tensors is not supported (delegate takes {', '.join(table['dtypes'])})"
    if op.get("max_rank", 0) > table["max_rank"]:
        return f"{op['op']} on rank-{op['max_rank']} tensors (delegate takes rank <= {table['max_rank']})"
    return None


def litert_preflight(ops: list[dict[str, Any]], delegate: str, *, float_as_fp16: bool = False) -> dict[str, Any]:
    """Split a .tflite's ops (from `medge.devices.recipes.litert.convert.tflite_ops`) into delegate and CPU ops.

    `float_as_fp16` says the delegate runs float32 tensors relaxed to FP16 (its fp16 precision mode).
    Returns ``{"checker", "delegate", "device", "accelerated_ops", "cpu_ops", "coverage",
    "partitions", "supported": {op: n}, "fallback": [{"index", "op", "reason"}], "ok"}``.
    ``delegated_macs_share`` is the share of the model's estimated work (op ``macs``) the delegate
    runs (None when the ops carry no estimate).  ``partitions`` counts the contiguous runs of delegated ops (each one is a hand-over between the
    accelerator and the CPU); ``ok`` is False only when no op at all would run on the accelerator.
    """
    table = delegate_table(delegate)
    supported: dict[str, int] = {}
    fallback: list[dict[str, Any]] = []
    partitions, previous_delegated = 0, False
    for op in ops:
        reason = _fallback_reason(op, table, float_as_fp16)
        if reason is None:
            supported[op["op"]] = supported.get(op["op"], 0) + 1
            partitions += 0 if previous_delegated else 1
        else:
            fallback.append({"index": op["index"], "op": op["op"], "reason": reason})
        previous_delegated = reason is None
    n_acc = sum(supported.values())
    total_macs = sum(int(op.get("macs", 0)) for op in ops)
    fallback_index = {f["index"] for f in fallback}
    delegated_macs = sum(int(op.get("macs", 0)) for op in ops if op["index"] not in fallback_index)
    return {
        "checker": "litert-delegate-table",
        "delegate": delegate,
        "delegate_name": table["display_name"],
        "device": table["device"],
        "ops_total": len(ops),
        "accelerated_ops": n_acc,
        "cpu_ops": len(fallback),
        "coverage": round(n_acc / len(ops), 4) if ops else 0.0,
        "partitions": partitions,
        "delegated_macs_share": round(delegated_macs / total_macs, 4) if total_macs else None,
        "supported": dict(sorted(supported.items())),
        "fallback": fallback,
        "fallback_op_types": sorted({f["op"] for f in fallback}),
        "float_as_fp16": float_as_fp16,
        "note": table["note"],
        "ok": n_acc > 0,
    }


def openvino_preflight(model: Any, device: str) -> dict[str, Any]:
    """Op coverage of an ``openvino.Model`` on `device` (CPU/GPU/NPU).

    When the device's plugin is present here, ``Core.query_model`` decides; otherwise the static
    table of ops the device cannot run is used (``checker`` says which).  ``ok`` is False when some
    op cannot run on the device.
    """
    import openvino as ov

    core = ov.Core()
    ops = [(op.get_friendly_name(), op.get_type_name()) for op in model.get_ordered_ops()]
    op_types = sorted({t for _, t in ops if t not in ("Parameter", "Result", "Constant")})
    available = {d.split(".")[0] for d in core.available_devices}
    if device in available:
        placed = core.query_model(model, device)
        unsupported = [
            {"name": name, "op": kind} for name, kind in ops if name not in placed and kind not in ("Parameter", "Result")
        ]
        checker = f"openvino.Core.query_model({device})"
        note = f"checked by the {device} plugin on this host"
    else:
        table = _tables()["openvino_devices"].get(device)
        if table is None:
            raise UnknownNameError(f"no OpenVINO op table for device '{device}'; choices: CPU, GPU, NPU")
        blocked = set(table["unsupported"])
        unsupported = [{"name": name, "op": kind} for name, kind in ops if kind in blocked]
        checker = f"static table for the OpenVINO {device} plugin (not present here)"
        note = table["note"]
    return {
        "checker": checker,
        "device": device,
        "ops_total": sum(1 for _, t in ops if t not in ("Parameter", "Result", "Constant")),
        "op_types": op_types,
        "unsupported": unsupported,
        "note": note,
        "ok": not unsupported,
    }
