"""PyTorch → one self-contained, checked, shape-inferred, slimmed ONNX file with parity verified.

Exporter choice: opset < 18 uses the TorchScript exporter (``dynamo=False``), opset ≥ 18 the dynamo
exporter (which cannot go below 18).  Without ``--opset`` medge tries TorchScript at opset 17 (the
widest TensorRT / OpenVINO / LiteRT compatibility) and falls back to dynamo at opset 18.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from medge.common.errors import ExportError, ParityError, UsageError
from medge.common.console import warn
from medge.export.loading import RANDOM_WEIGHTS, LoadedModel, load_model
from medge.common.metadata import embed_metadata
from medge.export.parity import check_parity, load_samples
from medge.export.report import ExportReport
from medge.common.fileio import check_output_file, sha256_bytes, write_bytes_atomic
from medge.export.onnx_stats import count_macs, count_params, tensor_infos

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
DYNAMO_MIN_OPSET = 18
TORCHSCRIPT_MIN_OPSET = 7
MAX_PROTO_BYTES = 2**31 - 1


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter chatter on fds 1/2 (C++ and Python); it is logged at DEBUG (--verbose)."""
    captured: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = [os.dup(1), os.dup(2)]
        try:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
                yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))
            captured.append(out.getvalue() + err.getvalue())
            log.debug("exporter output:\n%s", "".join(captured))


def plan_exporters(opset: int | None) -> list[tuple[str, int]]:
    """(exporter, opset) attempts for a requested opset, in order."""
    if opset is None:
        return [("torchscript", DEFAULT_OPSET), ("dynamo", DYNAMO_MIN_OPSET)]
    if opset < TORCHSCRIPT_MIN_OPSET:
        raise UsageError(f"--opset {opset} is too old; use {TORCHSCRIPT_MIN_OPSET}..17 (TorchScript exporter) or ≥ 18 (dynamo)")
    if opset < DYNAMO_MIN_OPSET:
        return [("torchscript", opset)]
    return [("dynamo", opset)]


def _export_torchscript(module, examples: tuple, loaded: LoadedModel, opset: int, dynamic_batch: bool):
    import onnx
    import torch

    axes = {n: {0: "batch"} for n in loaded.input_names + loaded.output_names} if dynamic_batch else None
    buf = io.BytesIO()
    torch.onnx.export(
        module, examples, buf, dynamo=False, opset_version=opset,
        input_names=loaded.input_names, output_names=loaded.output_names,
        dynamic_axes=axes, do_constant_folding=True, verbose=False,
    )
    return onnx.load_from_string(buf.getvalue())


def _export_dynamo(module, examples: tuple, loaded: LoadedModel, opset: int, dynamic_batch: bool):
    import torch

    shapes = None
    exported = loaded.extra.get("program")
    if exported is not None and (dynamic_batch or not loaded.extra.get("dynamic_batch")):
        module = exported  # an ExportedProgram whose shapes are the ones asked for
    elif exported is not None:
        # a dynamic-batch program (what `medge prune` saves) exported without --dynamic-batch: the ONNX
        # gets the example's batch, like every other static export; a symbolic batch would put OpenVINO's
        # CPU plugin on its slower dynamic-shape path
        module = loaded.module
    elif dynamic_batch:
        # torch.export specialises size-1 dims, so trace the dynamic batch with an example of 2.
        examples = tuple(e.expand(2, *e.shape[1:]).contiguous() for e in examples)
        batch = torch.export.Dim("batch", min=1, max=4096)
        shapes = tuple({0: batch} for _ in examples)
    onnx_program = torch.onnx.export(
        module, examples, dynamo=True, opset_version=opset, external_data=False,
        input_names=loaded.input_names, output_names=loaded.output_names,
        dynamic_shapes=shapes, optimize=True, verbose=False,
    )
    model = onnx_program.model_proto
    if dynamic_batch:
        _rename_batch_symbol(model)
    return model


def _rename_batch_symbol(model) -> None:
    """Call the symbolic batch dim of the first input "batch" everywhere (dynamo names it s0, s77…)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    old = dims[0].dim_param if dims and dims[0].HasField("dim_param") else ""
    if not old or old == "batch":
        return
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param == old:
                dim.dim_param = "batch"


_OP_PATTERNS = (
    re.compile(r"operator '(?:aten::)?([\w.]+)'"),
    re.compile(r"aten[:.]{1,2}([A-Za-z_][\w]*)"),
    re.compile(r"Python operator (\w+)"),
)


def _failing_op(message: str) -> str | None:
    for pattern in _OP_PATTERNS:
        m = pattern.search(message)
        if m:
            return m.group(1).split(".")[0]
    return None


def locate_op(module, examples: tuple, op: str) -> str | None:
    """Name the innermost submodule whose forward runs the aten op `op` (None if not found)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
        return None
    stack: list[str] = []
    found: list[str] = []

    class _Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not found and func.overloadpacket.__name__ == op:
                found.append(stack[-1] if stack else "")
            return func(*args, **(kwargs or {}))

    def enter(name: str):
        def hook(mod, args) -> None:
            stack.append(name)
        return hook

    def leave(mod, args, out) -> None:
        stack.pop()

    handles = []
    for name, sub in module.named_modules():
        handles.append(sub.register_forward_pre_hook(enter(name)))
        handles.append(sub.register_forward_hook(leave))
    try:
        with torch.no_grad(), _Spy():
            module(*examples)
    except Exception:  # noqa: BLE001 - locating is best effort
        pass
    finally:
        for h in handles:
            h.remove()
    if not found:
        return None
    name = found[0]
    owner = module.get_submodule(name) if name else module
    return f"{name or '<root>'} ({type(owner).__name__})"


def _export_error(exc: Exception, module, examples: tuple, exporter: str, opset: int) -> ExportError:
    message = str(exc)
    op = _failing_op(message)
    if op is None:
        first = next((ln.strip() for ln in message.splitlines() if ln.strip()), type(exc).__name__)
        return ExportError(f"the {exporter} exporter (opset {opset}) failed: {first[:300]}")
    where = locate_op(module, examples, op)
    used = f" used in module {where}" if where else ""
    return ExportError(f"op '{op}'{used} cannot be exported to ONNX by the {exporter} exporter at opset {opset}")


def _to_onnx(loaded: LoadedModel, opset: int | None, dynamic_batch: bool) -> tuple[Any, str, int, list[str]]:
    example = loaded.examples()
    plan = plan_exporters(opset)
    if loaded.kind == "torchscript":
        if plan[0][0] == "dynamo":
            raise UsageError(f"TorchScript (.pt) models export only with opset < {DYNAMO_MIN_OPSET}; drop --opset or use ≤ 17")
        plan = [p for p in plan if p[0] == "torchscript"]
    if loaded.kind == "exported-program":
        if opset is not None and opset < DYNAMO_MIN_OPSET:
            raise UsageError(f"ExportedProgram (.pt2) models export with the dynamo exporter, which needs --opset ≥ {DYNAMO_MIN_OPSET}")
        if dynamic_batch and not loaded.extra.get("dynamic_batch"):
            raise UsageError("this ExportedProgram has a static batch dim; drop --dynamic-batch or re-export it "
                             "with torch.export.export(..., dynamic_shapes=...) on dim 0")
        plan = [("dynamo", opset or DYNAMO_MIN_OPSET)]
    notes: list[str] = []
    errors: list[ExportError] = []
    for exporter, version in plan:
        fn = _export_torchscript if exporter == "torchscript" else _export_dynamo
        try:
            with _quiet():
                model = fn(loaded.module, example, loaded, version, dynamic_batch)
            return model, exporter, version, notes
        except Exception as exc:  # noqa: BLE001 - exporters raise many types; all mean "cannot export"
            error = _export_error(exc, loaded.module, example, exporter, version)
            log.debug("%s exporter failed: %s", exporter, exc)
            notes.append(f"{exporter} exporter at opset {version} failed: {error}")
            errors.append(error)
    if len(errors) > 1:
        others = ", ".join(f"{e} exporter at opset {v}" for e, v in plan[1:])
        advice = f"the {others} fails too; replace it with ONNX-supported ops (--verbose shows the exporter log)"
    else:
        advice = "try another --opset (< 18: TorchScript exporter, ≥ 18: dynamo) or replace it with ONNX-supported ops"
    raise ExportError(f"{errors[0]}; {advice}")


def _torch_complexity(loaded: LoadedModel) -> tuple[int | None, int | None]:
    """Params and batch-1 MACs counted on the PyTorch module (None where it cannot be counted)."""
    import torch

    from medge.zoo.complexity import count_macs, count_params

    module = loaded.module
    if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
        return None, None
    if loaded.extra.get("macs"):  # a zoo model at its card's shape: counted already
        return count_params(module), int(loaded.extra["macs"])
    specs = loaded.input_specs()
    if any(not s.dtype.startswith("float") for s in specs):  # the meta-device counter feeds floats
        return count_params(module), None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            macs = count_macs(module, [(1, *s.shape[1:]) for s in specs])
    except Exception as exc:  # noqa: BLE001 - meta-device counting is best effort; ONNX counts instead
        log.debug("torch MAC count failed: %s", exc)
        macs = None
    return count_params(module), macs


def _slim(model) -> Any:
    import onnxslim

    with _quiet():
        return onnxslim.slim(model)


def _finalize(model, loaded: LoadedModel) -> bytes:
    """Check, infer shapes, embed metadata, serialise; raises ExportError on an invalid graph."""
    import onnx

    model.producer_name, model.producer_version = "medge", loaded.meta.medge_version
    model.doc_string = ""
    try:
        onnx.checker.check_model(model, full_check=False)
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - onnx checker/inference errors
        raise ExportError(f"the exported graph is not valid ONNX: {str(exc).splitlines()[0][:300]}") from None
    embed_metadata(model, loaded.meta)
    if model.ByteSize() > MAX_PROTO_BYTES:
        raise ExportError("the model is ≥ 2 GB, beyond a single protobuf file; medge exports models below 2 GB")
    return model.SerializeToString()


def export_onnx(
    model: str,
    output: str | os.PathLike,
    *,
    weights: str | None = None,
    model_kwargs: dict | None = None,
    input_shape: tuple | None = None,
    opset: int | None = None,
    dynamic_batch: bool = False,
    samples: str | os.PathLike | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    loaded: LoadedModel | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export `model` to one self-contained ONNX file at `output`, verified against PyTorch.

    Raises `ParityError` (with ``.report``) and writes nothing when ONNX Runtime disagrees with
    PyTorch beyond ``atol + rtol·|ref|``.  Pass `loaded` to export an already-loaded model, and
    `progress` to hear about each step (the CLI prints them on stderr).  A zoo model without weights
    is exported with a warning on stderr and in the report.
    """
    import onnx

    t0 = time.perf_counter()
    if atol < 0 or rtol < 0:
        raise UsageError("--atol and --rtol must be ≥ 0")
    check_output_file(output, "-o", suffix=".onnx")
    say = progress or (lambda text: None)
    if loaded is None:
        say(f"load {model}")
        loaded = load_model(model, weights=weights, model_kwargs=model_kwargs, input_shape=input_shape)
    warns: list[str] = []
    if loaded.extra.get("weights") == RANDOM_WEIGHTS:
        warns.append(f"'{model}' has no weights: the ONNX file holds randomly initialised weights and predicts "
                     "nothing (pass --weights PATH)")
        warn(warns[-1])
    specs = loaded.input_specs()
    sample_arr = load_samples(samples, specs) if samples else None
    say(f"export to ONNX ({'opset ' + str(opset) if opset else 'TorchScript opset 17, else dynamo opset 18'})")
    raw, exporter, version, notes = _to_onnx(loaded, opset, dynamic_batch)
    say("slim the graph and check parity against PyTorch")
    batches = [1, 2] if dynamic_batch else [loaded.input_shape[0]]

    def parity_of(data: bytes):
        return check_parity(
            loaded.module, data, inputs=specs, output_names=loaded.output_names,
            batch_sizes=batches, samples=sample_arr, atol=atol, rtol=rtol,
        )

    plain = onnx.ModelProto()
    plain.CopyFrom(raw)
    data, slimmed = _finalize(plain, loaded), False
    try:
        slim_data = _finalize(_slim(raw), loaded)
    except Exception as exc:  # noqa: BLE001 - onnxslim failing only means we keep the plain graph
        notes.append(f"onnxslim failed ({type(exc).__name__}); kept the unslimmed graph")
        slim_data = None
    parity = parity_of(slim_data) if slim_data is not None else None
    if parity is not None and parity.passed:
        data, slimmed = slim_data, True
    else:
        if parity is not None:
            notes.append(f"slimmed graph broke parity ({parity.failure_message()}); kept the unslimmed graph")
        parity = parity_of(data)

    final = onnx.load_from_string(data)
    params, macs = _torch_complexity(loaded)
    onnx_macs = count_macs(final)
    inputs, outputs = tensor_infos(final)
    report = ExportReport(
        model=model,
        onnx=str(output),
        sha256=sha256_bytes(data),
        source_sha256=loaded.sha256,
        exporter=exporter,
        opset=version,
        inputs=inputs,
        outputs=outputs,
        params=params if params is not None else count_params(final),
        onnx_params=count_params(final),
        macs=macs if macs is not None else onnx_macs,
        onnx_macs=onnx_macs,
        size_bytes=len(data),
        dynamic_batch=dynamic_batch,
        slimmed=slimmed,
        notes=notes,
        parity=parity,
        metadata={"task": loaded.meta.task, "labels": loaded.meta.labels, "input_layout": loaded.meta.input_layout,
                  "preprocessing": loaded.meta.preprocessing},
        weights=str(loaded.extra.get("weights", "")),
        warnings=warns,
    )
    if not parity.passed:
        report.seconds = round(time.perf_counter() - t0, 3)
        err = ParityError(
            f"ONNX output differs from PyTorch beyond atol {atol:g} + rtol {rtol:g}: {parity.failure_message()}; "
            f"nothing written to {output} (loosen --atol/--rtol only if this error is clinically acceptable)"
        )
        err.report = report  # type: ignore[attr-defined]
        raise err
    say(f"write {output}")
    write_bytes_atomic(output, data)
    report.written = True
    report.seconds = round(time.perf_counter() - t0, 3)
    return report

