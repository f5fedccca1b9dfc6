"""Resolve a model reference (zoo name, ``package.module:factory``, ``.pt2``, ``.pt``) to a module.

Weights come from safetensors or a state-dict checkpoint read with ``torch.load(weights_only=True)``
(``{"state_dict": ...}``/``{"model": ...}`` wrappers and ``module.`` prefixes are accepted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medge.common.errors import DataError, ModelLoadError, UnknownNameError, UsageError, did_you_mean
from medge.common.metadata import ModelMeta, read_sidecar
from medge.export.input_specs import InputSpec, example_tensors
from medge.common.fileio import sha256_file
from medge import __version__
from medge.export.declare import assumed_image_preprocessing
from medge.zoo import build_model, get_card, weights_path
from medge.zoo.catalog import WEIGHTS_DIR

if TYPE_CHECKING:
    import torch

LAYOUTS = {3: "NCL", 4: "NCHW", 5: "NCDHW"}
_MAX_KEYS_SHOWN = 6


# `LoadedModel.extra["weights"]` of a zoo model exported without weights of its own.
RANDOM_WEIGHTS = "random initialisation (no weights)"


@dataclass
class LoadedModel:
    """An eval-mode module ready to export, with what medge knows about it."""

    module: "torch.nn.Module"
    meta: ModelMeta
    input_shape: tuple[int, ...]
    input_names: list[str]
    output_names: list[str]
    sha256: str
    kind: str = "factory"  # zoo | factory | exported-program | torchscript
    params: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    inputs: list[InputSpec] = field(default_factory=list)  # every input; empty: one float32 input

    def input_specs(self) -> list[InputSpec]:
        """Every model input (the first is `input_names[0]` of `input_shape`)."""
        return list(self.inputs) or [InputSpec(self.input_names[0], tuple(self.input_shape))]

    def examples(self, batch: int | None = None) -> tuple:
        """Zero tensors for every input (batch `batch`, default the spec's own)."""
        return example_tensors(self.input_specs(), batch)


def _truncate(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    return shown + (f", … ({len(keys)} total)" if len(keys) > _MAX_KEYS_SHOWN else "")


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} is not a state dict of tensors; save it with torch.save(model.state_dict(), path)")
    prefix = "module."
    if obj and all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a state dict from safetensors or a ``torch.save`` checkpoint (weights only)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types
            raise ModelLoadError(f"cannot read safetensors file {path}: {exc}") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors of many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"cannot read weights {path} with torch.load(weights_only=True): {first}; "
            "save a plain state dict or safetensors"
        ) from None
    return _unwrap_state_dict(obj, path)


def load_weights(module: "torch.nn.Module", path: str | Path) -> None:
    """Load weights into `module`, failing with the missing/unexpected keys listed."""
    state = read_state_dict(path)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_truncate(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_truncate(unexpected)}")
        raise ModelLoadError(
            f"weights {path} do not match the model ({'; '.join(parts)}); "
            "check --model-kwargs or use the checkpoint of this architecture"
        )
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if state[k].shape != v.shape]
    if bad:
        raise ModelLoadError(f"weights {path} have wrong shapes: {_truncate(bad)}; check --model-kwargs")
    module.load_state_dict(state, strict=True)


def state_dict_sha256(module: "torch.nn.Module") -> str:
    """Deterministic sha256 over the module's state dict (names, dtypes, shapes, bytes)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _zoo_names() -> list[str]:
    try:
        from medge.zoo import MODELS
    except ImportError:
        return []
    return MODELS.names()


def _call_factory(ref: str, kwargs: dict[str, Any]):
    import importlib

    import torch

    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise UsageError(f"bad model reference '{ref}': use package.module:factory")
    try:
        mod = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"cannot import '{module_name}' for model '{ref}': {exc}; check the module path and PYTHONPATH") from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelLoadError(f"'{module_name}' has no attribute '{attr}' (model '{ref}'); check the factory name")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelLoadError(f"'{ref}' is not callable; give a class or function that returns an nn.Module")
    try:
        inspect.signature(obj).bind(**kwargs)
    except TypeError as exc:
        raise ModelLoadError(f"--model-kwargs do not fit {ref}: {exc}") from None
    except ValueError:
        pass  # builtins without a signature: let the call decide
    try:
        module = obj(**kwargs)
    except Exception as exc:  # noqa: BLE001 - user factory code raised
        raise ModelLoadError(f"factory {ref}({json.dumps(kwargs)}) failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"factory {ref} returned {type(module).__name__}, not a torch.nn.Module")
    return module


def _default_meta(model: str, shape: tuple[int, ...], output_names: list[str], sha: str) -> ModelMeta:
    return ModelMeta(
        model=model,
        task="unknown",
        labels=[],
        input_layout=LAYOUTS.get(len(shape), "N" + "?" * (len(shape) - 1)),
        preprocessing=assumed_image_preprocessing(shape) or {},
        source_sha256=sha,
        medge_version=__version__,
        output_names=output_names,
    )


def _probe_outputs(module, specs: "list[InputSpec] | tuple[int, ...]", model: str) -> int:
    """Run the module once; return its number of tensor outputs or fail on a bad input shape."""
    import torch

    if not isinstance(specs, list):
        specs = [InputSpec("input", tuple(specs))]
    shapes = ", ".join("x".join(map(str, s.shape)) for s in specs)
    with torch.no_grad():
        try:
            out = module(*example_tensors(specs))
        except Exception as exc:  # noqa: BLE001 - the model rejected the input
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(
                f"model '{model}' rejects input shape {shapes} "
                f"({f'rank {len(specs[0].shape)}' if len(specs) == 1 else f'{len(specs)} inputs'}): {first[:300]}; "
                "pass the shape(s) it expects with --input-shape"
            ) from None
    if isinstance(out, torch.Tensor):
        return 1
    if isinstance(out, (tuple, list)) and out and all(isinstance(o, torch.Tensor) for o in out):
        return len(out)
    raise ModelLoadError(f"model '{model}' returns {type(out).__name__}; medge exports models that return a tensor or a tuple of tensors")


def _shared_weights(card) -> Path | None:
    """The shipped weights file a card's factory loads itself (`ModelCard.weights_from`)."""
    path = WEIGHTS_DIR / f"{card.weights_from}.safetensors" if card.weights_from else None
    return path if path is not None and path.is_file() else None


def _load_zoo(name: str, weights, kwargs, input_shape) -> LoadedModel:
    card = get_card(name)
    pretrained = weights is None
    if kwargs:  # a variant of the card's architecture: no demo weights apply
        module = _call_factory(card.factory, {**card.factory_kwargs, **kwargs})
    else:
        module = build_model(name, pretrained=pretrained)
    if weights is not None:
        load_weights(module, weights)
        sha, weights_kind = sha256_file(weights), f"{Path(weights).name} (--weights)"
    elif pretrained and card.weights and not kwargs:  # a kwargs variant gets no demo weights

        sha, weights_kind = sha256_file(weights_path(card)), "demo weights (synthetic data, not for clinical use)"
    elif pretrained and not kwargs and (shared := _shared_weights(card)) is not None:  # the factory loaded them
        sha, weights_kind = sha256_file(shared), f"demo weights of {shared.stem} (synthetic data, not for clinical use)"
    else:
        sha, weights_kind = state_dict_sha256(module), RANDOM_WEIGHTS
    shape = tuple(card.input_shape)
    specs = [InputSpec(card.input_name, shape)] + [
        InputSpec(i["name"], tuple(i["shape"]), i.get("dtype", "float32"), i.get("default")) for i in card.extra_inputs]
    if isinstance(input_shape, list):  # named shapes: override the card's inputs by name
        given = {s.name: s for s in input_shape}
        unknown = sorted(set(given) - {s.name for s in specs})
        if unknown:
            raise UsageError(f"zoo model '{name}' has no input {', '.join(unknown)}; its inputs: "
                             f"{', '.join(s.name for s in specs)}")
        specs = [dataclasses.replace(s, shape=given[s.name].shape) if s.name in given else s for s in specs]
        input_shape = specs[0].shape
    if input_shape is not None:
        if len(input_shape) != len(shape):
            raise DataError(
                f"--input-shape {'x'.join(map(str, input_shape))} has rank {len(input_shape)} but zoo model "
                f"'{name}' takes rank {len(shape)} ({'x'.join(map(str, shape))}); drop --input-shape or fix it"
            )
        shape = tuple(input_shape)
    preprocessing = dict(card.preprocessing)
    if preprocessing.get("kind") == "image" and len(shape) == 4:
        preprocessing.update(channels=shape[1], height=shape[2], width=shape[3])
    elif preprocessing.get("kind") == "signal" and len(shape) == 3:
        preprocessing.update(samples=shape[2])
    meta = ModelMeta(
        model=name,
        task=card.task,
        labels=list(card.labels),
        input_layout=card.input_layout,
        preprocessing=preprocessing,
        source_sha256=sha,
        medge_version=__version__,
        output_names=list(card.output_names),
    )
    specs[0] = dataclasses.replace(specs[0], shape=shape)
    meta.extra = {"inputs": [s.to_dict() for s in specs]} if len(specs) > 1 else {}
    if card.synthetic_task:  # which demo data fits, for `synthetic` sources (calibration reads no zoo)
        meta.extra["synthetic_task"] = card.synthetic_task
    extra: dict[str, Any] = {"weights": weights_kind}
    if not kwargs and shape == tuple(card.input_shape) and card.macs and len(specs) == 1:
        extra["macs"] = card.macs  # counted once into complexity.json; saves a FlopCounterMode pass
    return LoadedModel(module.eval(), meta, shape, [s.name for s in specs], list(card.output_names), sha, kind="zoo",
                       inputs=specs if len(specs) > 1 else [], extra=extra)


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Silence logger `name` (torch.export logs a traceback before it raises) for the block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_file(path: Path, weights, input_shape, extra: dict[str, Any]) -> tuple[Any, str, tuple[int, ...] | None]:
    import torch

    if path.suffix == ".pt2":
        if weights is not None:
            raise UsageError("--weights cannot be applied to an ExportedProgram (.pt2); it already holds its weights")
        from medge.runtimes.model_file import open_model

        open_model(path)  # a damaged archive is one line here, not torch's logged traceback
        try:
            with warnings.catch_warnings(), _quiet_logger("torch.export"):
                warnings.simplefilter("ignore")
                program = torch.export.load(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot load ExportedProgram {path}: {type(exc).__name__}: {str(exc)[:200]}") from None
        shapes = [tuple(n.meta["val"].shape) for n in program.graph.nodes
                  if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
        if len(shapes) != 1:
            raise ModelLoadError(f"{path} has {len(shapes)} user inputs; medge exports single-input models")
        # Symbolic (dynamic) dims are exported at size 1; the program keeps them dynamic.
        shape = tuple(d if isinstance(d, int) else 1 for d in shapes[0])
        extra["program"] = program
        extra["dynamic_batch"] = not isinstance(shapes[0][0], int)
        if input_shape is not None and tuple(input_shape) != shape:
            raise DataError(
                f"--input-shape {'x'.join(map(str, input_shape))} differs from the ExportedProgram's input "
                f"{'x'.join(map(str, shape))}; drop --input-shape (a .pt2 file fixes its own shape)"
            )
        return program.module(), "exported-program", shape
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot load TorchScript file {path}: {str(exc).strip().splitlines()[0][:200]}; "
            "a .pt model file must be saved with torch.jit.save (for a state dict use --weights with a factory)"
        ) from None
    if weights is not None:
        load_weights(module, weights)
    return module, "torchscript", input_shape


MODEL_FILE_SUFFIXES = (".pt2", ".pt", ".pth", ".ts")


def source_reference(ref: str, model_kwargs: dict | None = None, weights: str | None = None) -> str:
    """One string naming a PyTorch source with its factory kwargs and weights.

    A plain reference stays as it is; with kwargs or weights it becomes a JSON object
    ``{"ref": ..., "kwargs": {...}, "weights": "/abs/path"}`` that `load_model` accepts wherever a
    model reference is taken (e.g. a recipe's ``model_ref``).
    """
    if not model_kwargs and not weights:
        return ref
    spec: dict[str, Any] = {"ref": ref}
    if model_kwargs:
        spec["kwargs"] = model_kwargs
    if weights:
        spec["weights"] = str(Path(weights).resolve())
    return json.dumps(spec, sort_keys=True)


def parse_source_reference(text: str) -> tuple[str, dict, str | None]:
    """(ref, kwargs, weights) of a `source_reference` string; a plain reference has no kwargs/weights."""
    if not text.lstrip().startswith("{"):
        return text, {}, None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"model source '{text[:80]}' is not valid JSON ({exc.msg}); use "
                         "{\"ref\": \"pkg.module:factory\", \"kwargs\": {...}, \"weights\": PATH}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("ref"), str):
        raise UsageError("a JSON model source needs a \"ref\" string, e.g. {\"ref\": \"monai.networks.nets:UNet\"}")
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise UsageError("the \"kwargs\" of a JSON model source must be an object")
    return spec["ref"], kwargs, spec.get("weights")


def source_record(model: str, kind: str, kwargs: dict, weights: str | None, sha: str) -> dict[str, Any]:
    """What the ONNX metadata stores about the PyTorch source (``extra["source"]``), so that
    `medge compile` can find the model again without --model-ref."""
    ref = model if kind in ("zoo", "factory") else str(Path(model).resolve())
    record: dict[str, Any] = {"ref": ref, "kind": kind, "kwargs": dict(kwargs), "sha256": sha}
    if weights:
        record["weights"] = str(Path(weights).resolve())
    return record


def classify_reference(model: str, zoo: list[str], *, has_kwargs: bool = False, has_shape: bool = False) -> str:
    """Kind of a model reference (zoo, factory, exported-program, torchscript) — checked before
    torch is imported, so that typos fail fast."""
    path = Path(model)
    if model in zoo:
        return "zoo"
    if path.suffix in MODEL_FILE_SUFFIXES:
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {model}")
        if has_kwargs:
            raise UsageError("--model-kwargs only applies to zoo names and package.module:factory references")
        kind = "exported-program" if path.suffix == ".pt2" else "torchscript"
    elif ":" in model and not path.exists():
        kind = "factory"
    else:
        raise UnknownNameError(
            f"unknown model '{model}';{did_you_mean(model, zoo)} give a zoo name "
            f"({', '.join(zoo) or 'none registered'}), package.module:factory, or a .pt2/.pt file"
        )
    if kind != "exported-program" and not has_shape:
        raise UsageError(f"--input-shape is required for '{model}' (e.g. --input-shape 1x1x256x256)")
    return kind


def load_model(
    model: str,
    weights: str | None = None,
    model_kwargs: dict | None = None,
    input_shape: tuple | None = None,
) -> LoadedModel:
    """Build or load `model` in eval mode: a zoo name, ``package.module:factory``, ``.pt2`` or ``.pt``.

    Non-zoo models need `input_shape` (an ExportedProgram carries its own); their metadata gets
    task ``unknown`` and no labels.
    """
    ref, spec_kwargs, spec_weights = parse_source_reference(model)
    if ref != model:
        if model_kwargs or weights:
            raise UsageError("a JSON model source carries its own kwargs and weights; drop --model-kwargs/--weights")
        model, model_kwargs, weights = ref, spec_kwargs, spec_weights
    kwargs = dict(model_kwargs or {})
    zoo = _zoo_names()
    kind = classify_reference(model, zoo, has_kwargs=bool(kwargs), has_shape=input_shape is not None)
    if weights is not None and not Path(weights).is_file():
        raise ModelLoadError(f"weights file not found: {weights}")
    import torch

    # Seed so that randomly initialised layers (no weights given) export byte-identically.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _load_model(model, kind, weights, kwargs, input_shape)


def _load_model(model: str, kind: str, weights: str | None, kwargs: dict, input_shape: tuple | None) -> LoadedModel:
    import torch

    specs = list(input_shape) if isinstance(input_shape, list) and kind != "zoo" else None
    if specs is not None:
        input_shape = specs[0].shape
    shape = tuple(int(d) for d in input_shape) if input_shape is not None and not isinstance(input_shape, list) else None
    if kind == "zoo":
        shape = input_shape  # a shape or named specs; _load_zoo resolves them against the card
    extra: dict[str, Any] = {}
    if kind == "zoo":
        loaded = _load_zoo(model, weights, kwargs, shape)
    else:
        if kind == "factory":
            module = _call_factory(model, kwargs)
            if weights is not None:
                load_weights(module, weights)
            sha = sha256_file(weights) if weights else state_dict_sha256(module)
        else:
            module, kind, shape = _load_file(Path(model), weights, shape, extra)
            sha = sha256_file(weights) if weights else sha256_file(model)
        assert shape is not None  # classify_reference demands it for every kind but .pt2
        if kind != "exported-program":  # an unlifted ExportedProgram is already in eval form
            module.eval()
        if specs is not None and kind == "exported-program":
            raise UsageError("named --input-shape values are for factories and TorchScript files; a .pt2 fixes its inputs")
        names = ["output"]
        n_out = _probe_outputs(module, specs or shape, model)
        if n_out > 1:
            names = [f"output_{i}" for i in range(n_out)]
        meta, input_names = _default_meta(model, shape, names, sha), ["input"]
        stored = read_sidecar(model) if kind == "exported-program" else None
        if stored is not None:  # e.g. a pruned zoo model: keep its task, labels and preprocessing
            meta = dataclasses.replace(stored, source_sha256=sha, medge_version=meta.medge_version)
            if len(stored.output_names) == len(names):
                names = list(stored.output_names)
            input_names = list((stored.extra or {}).get("input_names") or input_names)
        if specs is not None:
            input_names = [sp.name for sp in specs]
            meta.extra = {**(meta.extra or {}), "inputs": [sp.to_dict() for sp in specs]}
        loaded = LoadedModel(module, meta, shape, input_names, names, sha, kind=kind, extra=extra, inputs=specs or [])
    if loaded.kind == "zoo":
        _probe_outputs(loaded.module, loaded.input_specs(), model)
    loaded.meta.extra = {**(loaded.meta.extra or {}),
                         "source": source_record(model, loaded.kind, kwargs, weights, loaded.sha256)}
    loaded.params = int(sum(p.numel() for p in loaded.module.parameters())) if isinstance(loaded.module, torch.nn.Module) else 0
    if "weights" not in loaded.extra:
        loaded.extra["weights"] = (f"{Path(weights).name} (--weights)" if weights else "held in the file"
                                   if kind in ("exported-program", "torchscript") else "as the factory builds them")
    return loaded
