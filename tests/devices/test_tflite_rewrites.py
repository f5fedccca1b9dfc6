"""The rewrites used before TFLite conversion (transposed conv, PReLU, LeakyReLU) compute the same function."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medge.devices.recipes.litert.rewrites import conv_transpose2d_as_conv, replace_conv_transpose


@pytest.mark.parametrize("k,s,p,op", [(3, 2, 1, 1), (2, 2, 0, 0), (4, 2, 1, 0), (3, 1, 1, 0), (5, 3, 2, 2)])
def test_matches_conv_transpose2d(k, s, p, op):
    torch.manual_seed(k * 10 + s)
    x, w, b = torch.randn(1, 4, 7, 9), torch.randn(4, 6, k, k), torch.randn(6)
    ref = F.conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op)
    got = conv_transpose2d_as_conv(x, w, b, s, p, op)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c_in,c_out,groups", [(4, 4, 4), (8, 4, 2), (6, 12, 3)])
def test_grouped_matches_conv_transpose2d(c_in, c_out, groups):
    """MedNeXt up-samples with a depthwise transposed conv, which TFLite cannot legalise either."""
    torch.manual_seed(groups)
    x, w, b = torch.randn(2, c_in, 5, 6), torch.randn(c_in, c_out // groups, 3, 3), torch.randn(c_out)
    torch.testing.assert_close(conv_transpose2d_as_conv(x, w, b, 2, 1, 1, groups=groups),
                               F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1, groups=groups),
                               rtol=1e-5, atol=1e-5)


def test_modules_are_swapped():
    from medge.devices.recipes.litert.rewrites import ConvTranspose2dAsConv, ConvTranspose2dCropped

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Sequential(nn.ConvTranspose2d(4, 2, 3, 2, 1, 1)),
                        nn.ConvTranspose2d(2, 2, 4, 2, 1, groups=2), nn.ConvTranspose2d(2, 2, 3, 2, 0, 1))
    y = torch.randn(1, 1, 8, 8)
    ref = net(y)
    assert replace_conv_transpose(net) == 3
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    # padding that covers the output padding: TRANSPOSE_CONV cropped; grouped or op > padding: zero insertion
    assert isinstance(net[1][0], ConvTranspose2dCropped)
    assert isinstance(net[2], ConvTranspose2dAsConv) and isinstance(net[3], ConvTranspose2dAsConv)
    torch.testing.assert_close(net(y), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,s,p,op,d", [(3, 2, 1, 1, 1), (2, 2, 0, 0, 1), (4, 2, 1, 0, 1), (3, 3, 2, 1, 2),
                                        ((3, 5), (2, 1), (1, 2), (1, 0), 1)])
def test_cropped_transpose_conv_matches(k, s, p, op, d):
    from medge.devices.recipes.litert.rewrites import ConvTranspose2dCropped

    torch.manual_seed(3)
    layer = nn.ConvTranspose2d(4, 6, k, stride=s, padding=p, output_padding=op, dilation=d)
    x = torch.randn(2, 4, 7, 10)
    assert ConvTranspose2dCropped.applies(layer)
    torch.testing.assert_close(ConvTranspose2dCropped(layer)(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("slopes,side", [((-0.5, 0.3, 0.9), -1), ((1.5, 1.0, 2.0), 1), ((-1.2, 0.5, 1.5), 0)])
def test_prelu_rewrite_matches(slopes, side):
    """Slopes all below 1 (x + relu((a − 1)x)), all above (x − relu((1 − a)x)), on both sides (affine)."""
    from medge.devices.recipes.litert.rewrites import PReLUAsResidualReLU, replace_prelu

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.PReLU(3), nn.Conv2d(3, 2, 1), nn.PReLU())
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor(slopes))
        net[3].weight.fill_(-0.4)
    x = torch.randn(1, 1, 9, 9)
    ref = net(x)
    assert replace_prelu(net) == 2
    assert net[1].side == side
    assert isinstance(net[3], PReLUAsResidualReLU) and net[3].side == -1
    torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-6)


def test_leaky_relu_rewrite_matches():
    from medge.devices.recipes.litert.rewrites import LeakyReLUAsMaximum, replace_leaky_relu

    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.LeakyReLU(0.01), nn.Sequential(nn.Conv2d(3, 2, 1), nn.LeakyReLU(0.2)),
                        nn.LeakyReLU(1.5))
    x = torch.randn(1, 1, 9, 9)
    ref = net(x)
    assert replace_leaky_relu(net) == 2  # a slope above 1 is not max(x, a·x): left as it is
    assert isinstance(net[3], nn.LeakyReLU) and isinstance(net[1], LeakyReLUAsMaximum)
    torch.testing.assert_close(net(x), ref, rtol=0, atol=0)
