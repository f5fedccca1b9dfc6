"""MATRIX.yaml: models × targets × precisions (× prune), validated before any work starts.

```yaml
models:
  - us-dct-vit                       # a zoo name
  - name: mine                       # or a mapping
    model: mypkg.nets:make_net       # module:factory, .pt2 or .onnx
    kwargs: {in_channels: 1}
    weights: w.safetensors
    input_shape: 1x1x64x64
    calib: data/calib
    eval: data/eval
    timeout: 900
targets: [intel-cpu, android-qualcomm-npu]
precisions: [int8]
prune: [none, auto]
exclude: [{model: mine, target: android-qualcomm-npu}]
timeout: 1800        # seconds per cell attempt
retries: 1           # extra attempts after a build_failed or timeout
threads: 2           # per cell (also Ray's num_cpus)
```
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medge.common.errors import UsageError, did_you_mean
from medge.scale.yamlfile import as_list, check_choice, check_keys, load_yaml, positive_number
from medge.devices import TARGETS
from medge.devices.target import PRECISIONS
from medge.zoo import MODELS

TOP_KEYS = ("models", "targets", "precisions", "prune", "exclude", "timeout", "retries", "threads", "runs", "warmup",
            "max_drop", "device_bound")
MODEL_KEYS = ("name", "model", "kwargs", "weights", "input_shape", "calib", "eval", "max_drop", "timeout", "retries",
              "threads")
CELL_AXES = ("model", "target", "precision", "prune")
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Cell:
    """One `medge build` (or compile + profile for an .onnx model) of the matrix."""

    model: str  # the model entry's name (zoo name, file stem or factory name)
    source: str  # what `medge build` gets: zoo name, module:factory, .pt2 or .onnx path
    target: str
    precision: str
    prune: str  # "none", "auto" or a sparsity
    timeout_s: float
    retries: int
    threads: int
    runs: int
    warmup: int
    kwargs: dict[str, Any] | None = None
    weights: str | None = None
    input_shape: str | None = None
    calib: str | None = None
    eval: str | None = None
    max_drop: float | None = None
    device_bound: bool = False  # needs the device itself (TensorRT engine, on-device profiling)
    on_farm: bool = False  # `--farm`: profiled on a leased farm device after the host build, not by the build

    @property
    def cell_id(self) -> str:
        """Folder name under OUT/cells: model__target__precision[__prune-X]."""
        parts = [self.model, self.target, self.precision] + ([f"prune-{self.prune}"] if self.prune != "none" else [])
        return "__".join(p.replace("/", "_").replace(":", "_") for p in parts)

    def axes(self) -> dict[str, str]:
        """The cell's coordinates (what `exclude` and `--only` match)."""
        return {"model": self.model, "target": self.target, "precision": self.precision, "prune": self.prune}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (travels to a Ray task)."""
        return asdict(self)


@dataclass
class MatrixSpec:
    """A validated matrix file and its cells, in file order."""

    path: Path
    cells: list[Cell] = field(default_factory=list)
    excluded: int = 0


def _model_entry(raw: Any, index: int) -> dict[str, Any]:
    where = f"models[{index}]"
    if isinstance(raw, str):
        raw = {"model": raw}
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: give a zoo name, a module:factory, a .pt2/.onnx path or a mapping with 'model:'")
    check_keys(raw, MODEL_KEYS, where)
    source = raw.get("model") or raw.get("name")
    if not isinstance(source, str) or not source:
        raise UsageError(f"{where}: needs 'model:' (zoo name, module:factory, .pt2 or .onnx)")
    entry = dict(raw, model=source)
    _check_source(source, where)
    default_name = source.rpartition(":")[2] if ":" in source else (Path(source).stem if "/" in source or "." in source
                                                                      else source)
    entry["name"] = str(raw.get("name") or default_name)
    if entry.get("kwargs") is not None and not isinstance(entry["kwargs"], dict):
        raise UsageError(f"{where}.kwargs: must be a mapping of keyword arguments (got {entry['kwargs']!r})")
    for key in ("weights", "calib", "eval"):
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{where}.{key}: must be a path or a data source string (got {value!r})")
        if key == "weights" and value and not Path(value).exists():
            raise UsageError(f"{where}.weights: file not found: {value}")
        if key in ("calib", "eval") and value and not value.startswith("synthetic") and not Path(value).exists():
            raise UsageError(f"{where}.{key}: data not found: {value}; give a folder, file or synthetic[:task]")
    return entry


def _check_source(source: str, where: str) -> None:
    if ":" in source and not source.startswith(("/", ".")) and source.split(":", 1)[0].replace(".", "").isidentifier():
        return  # module:factory, imported by the cell's own process
    if source.endswith((".pt2", ".pt", ".onnx")):
        if not Path(source).is_file():
            raise UsageError(f"{where}: model file not found: {source}")
        return
    if source not in MODELS:
        raise UsageError(f"{where}: unknown zoo model '{source}';{did_you_mean(source, MODELS.names())} see 'medge zoo list'"
                         " (or give module:factory, .pt2 or .onnx)")


def _prune_value(value: Any, where: str) -> str:
    if value in ("none", "auto", None, False):
        return "none" if value in (None, False) else str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
        return str(value)
    return check_choice(str(value), ("none", "auto", "0.3", "0.5"), where)


def _excluded(axes: dict[str, str], rules: list[dict[str, Any]]) -> bool:
    return any(all(str(axes[k]) == str(v) for k, v in rule.items()) for rule in rules)


def parse_only(pairs: list[str] | None) -> dict[str, set[str]]:
    """``--only KEY=VALUE`` flags → {axis: values} (several values of one axis are alternatives)."""
    only: dict[str, set[str]] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not value:
            raise UsageError(f"bad --only '{pair}'; use KEY=VALUE with KEY one of {', '.join(CELL_AXES)}")
        check_choice(key, CELL_AXES, f"--only {pair}")
        only.setdefault(key, set()).add(value)
    return only


def load_matrix(path: str | Path, only: dict[str, set[str]] | None = None) -> MatrixSpec:
    """Read and validate MATRIX.yaml (unknown keys/values are one-line `UsageError`s); returns its cells."""
    path = Path(path)
    data = load_yaml(path, "matrix")
    check_keys(data, TOP_KEYS, str(path))
    for key in ("models", "targets"):
        if key not in data:
            raise UsageError(f"{path}: '{key}:' is missing; a matrix names models and targets")
    models = [_model_entry(m, i) for i, m in enumerate(as_list(data["models"], f"{path}: models"))]
    names = [m["name"] for m in models]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UsageError(f"{path}: two models are named '{dup}'; give one of them 'name:'")
    targets = [check_choice(t, TARGETS.names(), f"{path}: targets") for t in as_list(data["targets"], f"{path}: targets")]
    precisions = [check_choice(p, PRECISIONS, f"{path}: precisions")
                  for p in as_list(data.get("precisions", ["int8"]), f"{path}: precisions")]
    prunes = [_prune_value(p, f"{path}: prune") for p in as_list(data.get("prune", ["none"]), f"{path}: prune")]
    device_bound = set(as_list(data["device_bound"], f"{path}: device_bound")) if "device_bound" in data else \
        {name for name in TARGETS.names() if TARGETS.get(name).runtime == "tensorrt"}
    for t in device_bound:
        check_choice(t, TARGETS.names(), f"{path}: device_bound")
    rules = data.get("exclude") or []
    if not isinstance(rules, list) or not all(isinstance(r, dict) and r for r in rules):
        raise UsageError(f"{path}: exclude is a list of mappings such as {{model: X, target: Y}}")
    for i, rule in enumerate(rules):
        check_keys(rule, CELL_AXES, f"{path}: exclude[{i}]")
    defaults = {
        "timeout": positive_number(data.get("timeout", DEFAULT_TIMEOUT_S), f"{path}: timeout"),
        "retries": positive_number(data.get("retries", 0), f"{path}: retries", integer=True, allow_zero=True),
        "threads": positive_number(data.get("threads", 2), f"{path}: threads", integer=True),
        "max_drop": data.get("max_drop"),
    }
    runs = positive_number(data.get("runs", 20), f"{path}: runs", integer=True)
    warmup = positive_number(data.get("warmup", 3), f"{path}: warmup", integer=True, allow_zero=True)
    if runs < 2:
        raise UsageError(f"{path}: runs must be at least 2 (got {runs})")
    spec = MatrixSpec(path)
    for m, target, precision, prune in itertools.product(models, targets, precisions, prunes):
        axes = {"model": m["name"], "target": target, "precision": precision, "prune": prune}
        if _excluded(axes, rules):
            spec.excluded += 1
            continue
        if only and any(axes[k] not in values for k, values in only.items()):
            continue
        where = f"{path}: models '{m['name']}'"
        spec.cells.append(Cell(
            model=m["name"], source=m["model"], target=target, precision=precision, prune=prune,
            timeout_s=float(positive_number(m.get("timeout", defaults["timeout"]), f"{where} timeout")),
            retries=int(positive_number(m.get("retries", defaults["retries"]), f"{where} retries", integer=True,
                                        allow_zero=True)),
            threads=int(positive_number(m.get("threads", defaults["threads"]), f"{where} threads", integer=True)),
            runs=int(runs), warmup=int(warmup), kwargs=m.get("kwargs"), weights=m.get("weights"),
            input_shape=m.get("input_shape"), calib=m.get("calib"), eval=m.get("eval"),
            max_drop=m.get("max_drop", defaults["max_drop"]), device_bound=target in device_bound,
        ))
    if not spec.cells:
        raise UsageError(f"{path}: no cell left after exclude/--only; check the filters")
    return spec
