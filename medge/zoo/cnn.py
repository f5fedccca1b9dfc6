"""Convolutional zoo architectures: CheXNet-style DenseNets, a frame screener and a lesion U-Net.

MONAI supplies the DenseNet and U-Net backbones; the frame screener is written here.  Every
factory returns a module in eval mode whose output is already a probability (sigmoid inside).
Each factory imports only the MONAI module that defines its network (`monai_class`), so that
importing this module stays cheap and exporting a zoo model does not load all of MONAI.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medge.zoo.catalog import CHEXNET_LABELS
from medge.zoo.monai_nets import monai_class


class SigmoidHead(nn.Module):
    """Wrap a backbone that outputs logits so that the module outputs probabilities."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


def chexnet_densenet121(num_labels: int = len(CHEXNET_LABELS), in_channels: int = 1) -> nn.Module:
    """Full DenseNet-121 in CheXNet layout: one grey channel in, one sigmoid per finding out."""
    DenseNet121 = monai_class("monai.networks.nets.densenet", "DenseNet121")
    net = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=num_labels)
    return SigmoidHead(net).eval()


def tiny_densenet(
    num_labels: int = 4,
    in_channels: int = 1,
    init_features: int = 16,
    growth_rate: int = 12,
    block_config: Sequence[int] = (2, 4, 6, 4),
) -> nn.Module:
    """Narrow DenseNet (growth 12, short blocks) for CPU/NPU-class devices; sigmoid outputs."""
    DenseNet = monai_class("monai.networks.nets.densenet", "DenseNet")
    net = DenseNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_labels,
        init_features=init_features,
        growth_rate=growth_rate,
        block_config=tuple(block_config),
        bn_size=4,
    )
    return SigmoidHead(net).eval()


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class FrameScreenCNN(nn.Module):
    """Small CNN that answers "does this ultrasound frame contain the structure/lesion?".

    Five stride-2 stages (128 → 4 px), global average pooling and one sigmoid output.
    """

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (16, 24, 32, 48, 64), dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for w in widths:
            layers += [_conv_bn_relu(cin, w, 2), _conv_bn_relu(w, w, 1)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pool(self.features(x)).flatten(1)
        return torch.sigmoid(self.fc(self.dropout(z)))


def frame_screen_cnn(in_channels: int = 1) -> nn.Module:
    """Factory for `FrameScreenCNN` in eval mode."""
    return FrameScreenCNN(in_channels=in_channels).eval()


def lesion_unet(
    in_channels: int = 1,
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 1,
) -> nn.Module:
    """MONAI U-Net with batch norm (foldable on edge compilers) and a sigmoid lesion mask."""
    UNet = monai_class("monai.networks.nets.unet", "UNet")
    net = UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=1,
        channels=tuple(channels),
        strides=tuple(strides),
        num_res_units=num_res_units,
        norm="batch",
    )
    return SigmoidHead(net).eval()
