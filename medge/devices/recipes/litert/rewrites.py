"""PyTorch rewrites that make a model convertible to a full-integer .tflite.

litert-torch lowers a strided ``ConvTranspose2d`` with ``output_padding`` (the U-Net decoder's
up-sampling) to an ``mhlo.convolution`` with input dilation that its TFLite legalisation rejects.
The same function is a plain convolution over the zero-inserted input:

    conv_transpose(x, W, s, p, op) == conv(zero_insert(x, s), flip(Wᵀ), padding=(d(k-1)-p, d(k-1)-p+op-(s-1)))

and zero insertion is a nearest-neighbour resize times a constant 0/1 mask: RESIZE_NEAREST_NEIGHBOR,
MUL, (PAD,) CONV_2D, all delegate-friendly.  It spends MACs on the inserted zeros (4× for stride 2);
the result is the same to float rounding.

Where the padding covers the output padding (the usual stride-2 up-sampling), the transposed conv is
instead kept as TRANSPOSE_CONV without padding and cropped (SLICE): no MACs on zeros, and no
RESIZE_NEAREST_NEIGHBOR, which XNNPACK does not take.

PReLU and LeakyReLU, which the INT8 quantizers leave in float, become MUL/ADD/MAXIMUM forms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _padding(weight_shape: Any, s, p, op, d) -> tuple[list[int], list[int]]:
    k = tuple(int(v) for v in weight_shape[2:])
    before = [d[i] * (k[i] - 1) - p[i] for i in range(2)]
    return before, [before[i] + op[i] - (s[i] - 1) for i in range(2)]


def _conv_kernel(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The conv kernel (Cout, Cin/g, kh, kw) of a transposed conv's weight (Cin, Cout/g, kh, kw): per
    group, in and out swapped and the taps flipped."""
    c_in, c_out_g = int(weight.shape[0]), int(weight.shape[1])
    kernel = weight.reshape(groups, c_in // groups, c_out_g, *weight.shape[2:]).transpose(1, 2)
    return kernel.reshape(groups * c_out_g, c_in // groups, *weight.shape[2:]).flip(2, 3)


def _zero_insert_conv(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None, s, before, after, d,
                      groups: int = 1) -> torch.Tensor:
    if s != (1, 1):
        h, w = int(x.shape[2]), int(x.shape[3])
        mask = np.zeros((1, 1, h * s[0], w * s[1]), dtype=np.float32)
        mask[..., :: s[0], :: s[1]] = 1.0
        x = F.interpolate(x, scale_factor=(float(s[0]), float(s[1])), mode="nearest") * torch.from_numpy(mask)
    if before == after:
        return F.conv2d(x, kernel, bias, padding=tuple(before), dilation=d, groups=groups)
    return F.conv2d(F.pad(x, (before[1], after[1], before[0], after[0])), kernel, bias, dilation=d, groups=groups)


def conv_transpose2d_as_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Any = 1,
                             padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> torch.Tensor:
    """`F.conv_transpose2d` computed as zero insertion + `F.conv2d` (grouped too), else as is."""
    s, p, op, d = _pair(stride), _pair(padding), _pair(output_padding), _pair(dilation)
    before, after = _padding(weight.shape, s, p, op, d)
    if min(before + after) < 0 or x.dim() != 4:
        return F.conv_transpose2d(x, weight, bias, stride=s, padding=p, output_padding=op, groups=groups, dilation=d)
    return _zero_insert_conv(x, _conv_kernel(weight, groups), bias, s, before, after, d, groups)


class ConvTranspose2dAsConv(nn.Module):
    """Drop-in for an `nn.ConvTranspose2d` (grouped too: MedNeXt's depthwise up-sampling), holding the
    equivalent conv kernel as its weight.

    The kernel is a parameter of its own (not a view of the transposed weight) so that PT2E
    quantization sees a plain conv weight to quantize per channel.
    """

    def __init__(self, layer: nn.ConvTranspose2d) -> None:
        super().__init__()
        self.groups = int(layer.groups)
        self.weight = nn.Parameter(_conv_kernel(layer.weight.detach(), self.groups).contiguous(), requires_grad=False)
        self.bias = layer.bias
        self.stride, self.dilation = _pair(layer.stride), _pair(layer.dilation)
        self.before, self.after = _padding(layer.weight.shape, self.stride, _pair(layer.padding),
                                           _pair(layer.output_padding), self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _zero_insert_conv(x, self.weight, self.bias, self.stride, self.before, self.after, self.dilation, self.groups)


class ConvTranspose2dCropped(nn.Module):
    """Drop-in for an `nn.ConvTranspose2d` whose padding covers its output padding: the transposed
    conv without padding (TRANSPOSE_CONV, which XNNPACK runs natively) cropped to the output
    (SLICE).  Same values, no MACs spent on inserted zeros, no RESIZE_NEAREST_NEIGHBOR (which
    XNNPACK does not take, so each one split the delegated graph)."""

    def __init__(self, layer: nn.ConvTranspose2d) -> None:
        super().__init__()
        self.weight, self.bias = layer.weight, layer.bias
        self.stride, self.dilation = _pair(layer.stride), _pair(layer.dilation)
        self.padding, self.output_padding = _pair(layer.padding), _pair(layer.output_padding)
        self.kernel = tuple(int(k) for k in layer.weight.shape[2:])

    @staticmethod
    def applies(layer: nn.ConvTranspose2d) -> bool:
        """Ungrouped, with the output padding within the padding (so the crop stays inside)."""
        p, op = _pair(layer.padding), _pair(layer.output_padding)
        return layer.groups == 1 and all(o <= q for o, q in zip(op, p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = F.conv_transpose2d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation)
        size = [(int(x.shape[2 + i]) - 1) * self.stride[i] - 2 * self.padding[i]
                + self.dilation[i] * (self.kernel[i] - 1) + self.output_padding[i] + 1 for i in range(2)]
        p = self.padding
        return full[:, :, p[0]:p[0] + size[0], p[1]:p[1] + size[1]]


def replace_conv_transpose(module: nn.Module) -> int:
    """Swap every `nn.ConvTranspose2d` in `module` (in place) for `ConvTranspose2dCropped` where it applies,
    else for `ConvTranspose2dAsConv`; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.ConvTranspose2d) and ConvTranspose2dCropped.applies(child):
            setattr(module, name, ConvTranspose2dCropped(child))
            count += 1
        elif isinstance(child, nn.ConvTranspose2d) and min(sum(_padding(
                child.weight.shape, _pair(child.stride), _pair(child.padding), _pair(child.output_padding),
                _pair(child.dilation)), [])) >= 0:
            setattr(module, name, ConvTranspose2dAsConv(child))
            count += 1
        else:
            count += replace_conv_transpose(child)
    return count


def slope_side(slope: Any) -> int:
    """Where PReLU slopes lie against 1 (concrete values): -1 all ≤ 1, +1 all ≥ 1, 0 both sides."""
    a = np.asarray(slope.detach() if isinstance(slope, torch.Tensor) else slope, dtype=np.float64)
    return -1 if (a <= 1).all() else 1 if (a >= 1).all() else 0


def prelu_as_residual_relu(x: torch.Tensor, slope: torch.Tensor, side: int) -> torch.Tensor:
    """``prelu(x, a)`` as ``x + relu((a − 1)·x)`` (`side` -1: every a ≤ 1) or ``x − relu((1 − a)·x)``
    (`side` +1: every a ≥ 1): a MUL that takes the ReLU as its fused activation, then ADD/SUB.

    Each op is quantized and runs in XNNPACK's int8 kernels, and the convolution before keeps one
    consumer.  The affine form ``a·x + (1 − a)·relu(x)`` (`side` 0: slopes on both sides of 1)
    leaves a standalone int8 RELU, which XNNPACK does not take: the U-Net's LiteRT INT8 ran as 10
    delegate partitions with the RELUs between them on the reference kernels.  `side` comes from
    `slope_side` on the concrete slopes (under torch.export they are symbolic).
    """
    if side < 0:
        return x + F.relu((slope - 1.0) * x)
    if side > 0:
        return x - F.relu((1.0 - slope) * x)
    return slope * x + (1.0 - slope) * F.relu(x)


class PReLUAsResidualReLU(nn.Module):
    """`nn.PReLU` as `prelu_as_residual_relu`, ops the INT8 quantizers annotate.

    litert-torch's PT2E quantizer leaves ``nn.PReLU`` (MONAI's default activation) unannotated, so
    it would run as a float island (DEQUANTIZE … QUANTIZE) and can leave a float model output.
    """

    def __init__(self, layer: nn.PReLU) -> None:
        super().__init__()
        a = layer.weight.detach().reshape(1, -1, 1, 1) if layer.num_parameters > 1 else layer.weight.detach().reshape(())
        self.register_buffer("slope", a.clone())
        self.side = slope_side(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.slope
        if slope.dim() == 4 and x.dim() != 4:  # per-channel slope on a 1-D/3-D activation
            slope = slope.reshape([1, -1] + [1] * (x.dim() - 2))
        return prelu_as_residual_relu(x, slope, self.side)


def replace_prelu(module: nn.Module) -> int:
    """Swap every `nn.PReLU` in `module` (in place) for `PReLUAsResidualReLU`; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.PReLU):
            setattr(module, name, PReLUAsResidualReLU(child))
            count += 1
        else:
            count += replace_prelu(child)
    return count


class LeakyReLUAsMaximum(nn.Module):
    """``leaky_relu(x, a) = max(x, a·x)`` for 0 ≤ a ≤ 1: MUL and MAXIMUM, which ai-edge-quantizer
    quantizes; it has no recipe for LEAKY_RELU, so MONAI's UNETR/SwinUNETR blocks stayed float
    islands (LEAKY_RELU between DEQUANTIZE and QUANTIZE, off the NPU)."""

    def __init__(self, negative_slope: float) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, x * self.negative_slope)


def replace_leaky_relu(module: nn.Module) -> int:
    """Swap every `nn.LeakyReLU` with a slope in [0, 1] in `module` (in place) for
    `LeakyReLUAsMaximum`; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.LeakyReLU) and 0.0 <= child.negative_slope <= 1.0:
            setattr(module, name, LeakyReLUAsMaximum(child.negative_slope))
            count += 1
        else:
            count += replace_leaky_relu(child)
    return count
