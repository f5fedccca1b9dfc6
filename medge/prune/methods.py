"""The pruning algorithms on a PyTorch module: structured channel pruning and unstructured magnitude.

Structured pruning uses ``torch_pruning``'s dependency graph, so channels are removed consistently
across concatenations (DenseNet, U-Net skips), residual additions and 1-D convolutions.  Layers
that must keep their width are left alone:

* output layers — every Conv/Linear whose result reaches a model output through parameter-free
  ops only (found by walking the autograd graph), so output shapes never change;
* token-wise ``nn.Linear`` layers (input rank > 2, i.e. attention/MLP inside transformer blocks)
  and ``nn.MultiheadAttention``, whose head reshapes hard-code the embedding width — except the
  hidden width of a transformer MLP (``fc1 → GELU → fc2``), which is pruned like any channel.

Unstructured pruning zeroes the smallest-magnitude weights globally (``torch.nn.utils.prune``);
it changes no shapes and brings no speed-up without sparse kernels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from medge.common.errors import MedgeError
from medge.common.registry import import_optional
from medge.prune.pruner import ChannelPruningError

_PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass
class StructuredResult:
    """What structured pruning changed: layer names kept whole (and why) and layers narrowed."""

    output_layers: list[str] = field(default_factory=list)
    token_layers: list[str] = field(default_factory=list)
    narrowed_layers: int = 0


@dataclass
class UnstructuredResult:
    """Zero fractions after magnitude pruning: of the pruned weight tensors and of all parameters."""

    pruned_tensors: int
    zero_fraction: float
    zero_fraction_all_params: float


def output_layers(module: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """Conv/Linear layers whose outputs reach a model output through parameter-free ops only."""
    producers: dict[object, nn.Module] = {}

    def remember(mod: nn.Module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.grad_fn is not None:
            producers[output.grad_fn] = mod

    hooks = [m.register_forward_hook(remember) for m in module.modules() if isinstance(m, _PRUNABLE)]
    try:
        with torch.enable_grad():
            out = module(example)
    finally:
        for hook in hooks:
            hook.remove()
    outputs = list(out) if isinstance(out, (tuple, list)) else [out]
    found: list[nn.Module] = []
    seen: set[object] = set()
    stack = [o.grad_fn for o in outputs if isinstance(o, torch.Tensor)]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if fn in producers:
            if producers[fn] not in found:
                found.append(producers[fn])
            continue
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return found


def token_layers(module: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """Linear layers applied to rank > 2 inputs (tokens) and multi-head attention modules."""
    found: list[nn.Module] = [m for m in module.modules() if isinstance(m, nn.MultiheadAttention)]

    def check(mod: nn.Module, inputs, _output) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() > 2 and mod not in found:
            found.append(mod)

    hooks = [m.register_forward_hook(check) for m in module.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for hook in hooks:
            hook.remove()
    return found


def mlp_hidden_layers(tp: Any, graph: Any, tokens: list[nn.Module]) -> list[nn.Module]:
    """The token-wise Linear layers whose output width is a transformer MLP's hidden width.

    Such a layer's channels reach exactly one other Linear's inputs through elementwise ops only
    (``fc1 → GELU → fc2``), so they can be pruned like any channel; a layer whose channels also
    reach a LayerNorm, a residual sum or a head reshape (qkv, proj, fc2) keeps its width.
    """
    found = []
    for layer in tokens:
        if not isinstance(layer, nn.Linear):
            continue
        group = graph.get_pruning_group(layer, tp.prune_linear_out_channels, [0])
        outs = ins = 0
        for item in group:
            target, handler = item.dep.target.module, getattr(item.dep.handler, "__name__", "")
            if type(target).__name__ in ("_ElementWiseOp", "_ReshapeOp"):
                continue
            if handler == "prune_out_channels" and target is layer:
                outs += 1
            elif handler == "prune_in_channels" and isinstance(target, nn.Linear):
                ins += 1
            else:
                outs = -1
                break
        if outs == 1 and ins == 1:
            found.append(layer)
    return found


@contextlib.contextmanager
def _measured_channel_inference() -> Iterator[None]:
    """Let torch_pruning fall back to the traced tensor shape when it cannot infer a channel count.

    torch_pruning 1.6 infers the channels feeding a concatenation by walking the graph and gives
    up behind parameter-free layers (e.g. the identity residual of MONAI's ``ResidualUnit`` after a
    one-parameter PReLU), which crashes its concat index mapping.  The autograd node it traced
    records the real output shape, so we read the channel dimension from there.
    """
    from torch_pruning.dependency import shape_infer

    original = shape_infer.infer_channels_between

    def infer(graph, node_1, node_2):
        channels = original(graph, node_1, node_2)
        if channels is None and node_1.grad_fn is not None:
            metadata = node_1.grad_fn._input_metadata
            if metadata and len(metadata[0].shape) >= 2:
                channels = int(metadata[0].shape[1])
        return channels

    shape_infer.infer_channels_between = infer
    try:
        yield
    finally:
        shape_infer.infer_channels_between = original


def _names(module: nn.Module, layers: list[nn.Module]) -> list[str]:
    by_id = {id(m): name for name, m in module.named_modules()}
    return [by_id.get(id(m), type(m).__name__) for m in layers]


def prune_structured_checked(module: nn.Module, example: torch.Tensor, sparsity: float, round_to: int | None,
                             model: str) -> StructuredResult:
    """`prune_structured`, with torch_pruning's failures on unusual graphs turned into a `ChannelPruningError`."""
    try:
        return prune_structured(module, example, sparsity, round_to)
    except MedgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch_pruning fails in many ways on unusual graphs
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ChannelPruningError(f"torch_pruning cannot prune the channels of '{model}' consistently "
                                  f"({type(exc).__name__}: {first[:160]})") from None


def kept_channels(width: int, sparsity: float, round_to: int | None = None) -> int:
    """Channels a layer of `width` keeps at `sparsity`, rounded for the target's kernels.

    Without `round_to` this is ``int(width * (1 - sparsity))`` (at least 1).  With it the kept
    count is the multiple of `round_to` nearest to that target; where the nearest multiple would
    leave the layer unpruned (narrow layers, width < 2 x `round_to`), the nearest multiple of half
    of it is taken instead (e.g. 16 -> 8 channels at ``round_to=16``: the AVX2 block of an AVX-512
    width), unless the full width is nearer still (12 channels at sparsity 0.1 stay 12).  Narrow layers matter: on these small models the full-resolution early layers carry
    most of the latency, so rounding that never prunes them makes MACs fall without speed.
    """
    target = width * (1.0 - sparsity)
    if not round_to or round_to <= 1:
        return max(1, int(target + 1e-9))
    for multiple in (round_to, round_to // 2):
        if multiple < 1:
            break
        kept = min(width, max(multiple, int(round(target / multiple)) * multiple))
        if kept < width and abs(kept - target) < abs(width - target):
            return kept
    return width


def prune_structured(module: nn.Module, example: torch.Tensor, sparsity: float,
                     round_to: int | None = None) -> StructuredResult:
    """Remove `sparsity` of the output channels of every prunable layer group, in place.

    Importance is the L2 norm of each channel's weights over the whole dependency group; each
    group keeps `kept_channels` of its width.  Output layers and token-wise layers keep their
    width (see the module docstring).
    """
    tp = import_optional("torch_pruning", what="structured pruning")
    module.eval()
    outputs = output_layers(module, example)
    tokens = [m for m in token_layers(module, example) if m not in outputs]
    widths_before = {name: _width(m) for name, m in module.named_modules() if isinstance(m, _PRUNABLE)}
    importance = tp.importance.MagnitudeImportance(p=2)
    with _measured_channel_inference():
        graph = tp.DependencyGraph().build_dependency(module, example_inputs=example)
        hidden = mlp_hidden_layers(tp, graph, tokens)
        tokens = [m for m in tokens if m not in hidden]
        plans = []
        for group in graph.get_all_groups(ignored_layers=outputs + tokens, root_module_types=list(_PRUNABLE)):
            root = group[0].dep.target.module
            if isinstance(root, nn.modules.conv._ConvNd) and root.groups > 1:
                continue  # grouped/depthwise roots follow the layer that feeds them
            scores = importance(group)
            if scores is None:
                continue
            width = len(scores)
            kept = kept_channels(width, sparsity, round_to)
            if kept < width:
                plans.append((root, group[0].dep.handler, torch.argsort(scores)[:width - kept].tolist()))
        for root, handler, indices in plans:
            group = graph.get_pruning_group(root, handler, indices)
            if graph.check_pruning_group(group):
                group.prune()
    narrowed = sum(1 for name, m in module.named_modules()
                   if isinstance(m, _PRUNABLE) and _width(m) != widths_before.get(name))
    return StructuredResult(_names(module, outputs), _names(module, tokens), narrowed)


def _width(layer: nn.Module) -> tuple[int, int]:
    weight = layer.weight
    return (int(weight.shape[0]), int(weight.shape[1]))


def prunable_weights(module: nn.Module, exclude: list[nn.Module]) -> list[tuple[nn.Module, str]]:
    """``(layer, "weight")`` pairs of every Conv/Linear layer not in `exclude`."""
    return [(m, "weight") for m in module.modules()
            if isinstance(m, _PRUNABLE) and m not in exclude and getattr(m, "weight", None) is not None]


def apply_unstructured_masks(params: list[tuple[nn.Module, str]], sparsity: float) -> None:
    """Attach global L1 masks zeroing the `sparsity` smallest-magnitude weights of `params`.

    The masks stay active (``weight = weight_orig * mask``) so that fine-tuning keeps pruned
    weights at zero; call `remove_unstructured_masks` to make them permanent.
    """
    from torch.nn.utils import prune

    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=float(sparsity))


def remove_unstructured_masks(module: nn.Module, params: list[tuple[nn.Module, str]]) -> UnstructuredResult:
    """Fold the masks into the weights and measure the resulting zero fractions."""
    from torch.nn.utils import prune

    for layer, name in params:
        prune.remove(layer, name)
    zeros = sum(int((getattr(layer, name) == 0).sum()) for layer, name in params)
    total = sum(getattr(layer, name).numel() for layer, name in params)
    all_zeros = sum(int((p == 0).sum()) for p in module.parameters())
    all_total = sum(p.numel() for p in module.parameters())
    return UnstructuredResult(len(params), zeros / max(total, 1), all_zeros / max(all_total, 1))
