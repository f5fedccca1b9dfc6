"""ECG lead reconstruction: 3 recorded leads (II, V1, V5) → the 12 standard leads, in mV.

A per-sample linear lead transform (1×1 conv) carries the bulk of the mapping -- for a dipolar
heart every lead is close to a linear mix of three independent ones -- and a dilated residual
temporal conv net (TCN) adds the non-linear, context-dependent correction (noise, non-dipolar
components).  Output order: I, II, III, aVR, aVL, aVF, V1..V6.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medge.zoo.catalog import INPUT_LEADS, STANDARD_LEADS



class ResidualTCNBlock(nn.Module):
    """Dilated conv → BN → GELU → 1×1 conv, added back to the input."""

    def __init__(self, width: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(width, width, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, bias=False)
        self.norm = nn.BatchNorm1d(width)
        self.act = nn.GELU()
        self.mix = nn.Conv1d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(self.act(self.norm(self.conv(x))))


class ECGLeadReconstructor(nn.Module):
    """Linear lead transform + dilated residual TCN correction."""

    def __init__(
        self,
        in_leads: int = len(INPUT_LEADS),
        out_leads: int = len(STANDARD_LEADS),
        width: int = 32,
        kernel: int = 7,
        dilations: Sequence[int] = (1, 2, 4, 8, 16, 1),
    ) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError("kernel must be odd so that the output keeps the input length")
        self.linear = nn.Conv1d(in_leads, out_leads, 1)
        self.inp = nn.Conv1d(in_leads, width, kernel, padding=kernel // 2)
        self.blocks = nn.Sequential(*(ResidualTCNBlock(width, kernel, d) for d in dilations))
        self.out = nn.Conv1d(width, out_leads, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.out(self.blocks(self.inp(x)))


def ecg_lead_reconstructor(**kwargs) -> nn.Module:
    """Factory for `ECGLeadReconstructor` in eval mode."""
    return ECGLeadReconstructor(**kwargs).eval()
