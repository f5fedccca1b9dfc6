"""MONAI transformer/ConvNeXt segmenters as 2-D zoo entries without weights (bring your own).

Each factory wraps the MONAI network so that its output is a sigmoid probability mask, like the
other zoo segmenters; MONAI is imported inside the factories.
"""

from __future__ import annotations

from torch import nn

from medge.zoo.cnn import SigmoidHead


def swinunetr_2d(in_channels: int = 1, out_channels: int = 1, feature_size: int = 12) -> nn.Module:
    """MONAI SwinUNETR, 2-D (input sides divisible by 32)."""
    from monai.networks.nets import SwinUNETR

    net = SwinUNETR(in_channels=in_channels, out_channels=out_channels, spatial_dims=2, feature_size=feature_size)
    return SigmoidHead(net).eval()


def mednext_2d(in_channels: int = 1, out_channels: int = 1, init_filters: int = 16) -> nn.Module:
    """MONAI MedNeXt (small), 2-D (input sides divisible by 16)."""
    from monai.networks.nets import MedNeXt

    net = MedNeXt(spatial_dims=2, init_filters=init_filters, in_channels=in_channels, out_channels=out_channels,
                  blocks_down=(2, 2, 2, 2), blocks_bottleneck=2, blocks_up=(2, 2, 2, 2))
    return SigmoidHead(net).eval()


def unetr_2d(in_channels: int = 1, out_channels: int = 1, img_size: int = 64, hidden_size: int = 192) -> nn.Module:
    """MONAI UNETR, 2-D (ViT encoder on 16×16 patches)."""
    from monai.networks.nets import UNETR

    net = UNETR(in_channels=in_channels, out_channels=out_channels, img_size=(img_size, img_size), spatial_dims=2,
                feature_size=16, hidden_size=hidden_size, mlp_dim=4 * hidden_size, num_heads=4)
    return SigmoidHead(net).eval()
