"""Parameter and multiply-accumulate (MAC) counts for any ``torch.nn.Module``.

MACs are counted by running one forward pass under ``torch.utils.flop_counter.FlopCounterMode``,
which sees every convolution (incl. transposed), linear layer, matmul/bmm (e.g. the attention
``Q @ K^T`` and ``A @ V`` products) and fused scaled-dot-product attention.  One MAC is two FLOPs.
The pass runs on the ``meta`` device by default, so it costs no compute and works for large
models; element-wise ops (activations, norms, softmax) are not counted, as is customary.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters of `module` (shared parameters counted once)."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def count_macs(
    module: nn.Module,
    input_shape: Sequence[int] | Sequence[Sequence[int]],
    *,
    on_meta: bool = True,
    dtype: torch.dtype = torch.float32,
) -> int:
    """Multiply-accumulates of one forward pass of `module` on input(s) of `input_shape`.

    `input_shape` is one shape (``(1, 1, 224, 224)``) or a sequence of shapes for a model with
    several inputs.  With ``on_meta=True`` (default) a deep copy of the module is moved to the
    meta device, so the count needs no real compute; the original module is left untouched.
    """
    shapes = _as_shapes(input_shape)
    if on_meta:
        model = copy.deepcopy(module).to("meta")
        device = torch.device("meta")
    else:
        model = module
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    inputs = [torch.zeros(tuple(s), dtype=dtype, device=device) for s in shapes]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops() // 2)


def _as_shapes(input_shape: Sequence[int] | Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    if len(input_shape) and isinstance(input_shape[0], (tuple, list, torch.Size)):
        return [tuple(int(d) for d in s) for s in input_shape]  # type: ignore[union-attr]
    return [tuple(int(d) for d in input_shape)]  # type: ignore[arg-type]
