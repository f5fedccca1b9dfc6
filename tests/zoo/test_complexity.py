"""Parameter and MAC counting on hand-checkable modules."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from medge.zoo.complexity import count_macs, count_params  # noqa: E402


def test_conv_and_linear_macs_match_hand_count():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    conv = 8 * 16 * 16 * 3 * 3 * 3
    linear = 8 * 16 * 16 * 10
    assert count_macs(net, (1, 3, 16, 16)) == conv + linear
    assert count_macs(net, (2, 3, 16, 16)) == 2 * (conv + linear)
    assert count_params(net) == (3 * 8 * 9 + 8) + (8 * 16 * 16 * 10 + 10)


class _Attention(nn.Module):
    def forward(self, x):  # x: (B, N, D)
        a = torch.softmax(torch.matmul(x, x.transpose(1, 2)), dim=-1)
        return torch.matmul(a, x)


def test_attention_matmuls_are_counted():
    n, d = 10, 6
    assert count_macs(_Attention(), (1, n, d)) == 2 * n * n * d


def test_grouped_conv_and_conv1d():
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    assert count_macs(dw, (1, 8, 10, 10)) == 8 * 10 * 10 * 9
    c1 = nn.Conv1d(3, 4, 5, padding=2)
    assert count_macs(c1, (1, 3, 100)) == 4 * 100 * 3 * 5


def test_shared_parameters_counted_once_and_module_untouched():
    lin = nn.Linear(4, 4)
    net = nn.Sequential(lin, lin)
    assert count_params(net) == 20
    count_macs(net, (1, 4))
    assert lin.weight.device.type == "cpu"  # the meta-device pass works on a copy
