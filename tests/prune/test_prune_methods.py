"""The pruning algorithms in process: layer detection, consistency across concat/residual/1-D."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet
from residual_models import residual_skip_1d, tiny_resnet

from medge.prune.methods import (
    apply_unstructured_masks,
    kept_channels,
    output_layers,
    prunable_weights,
    prune_structured,
    remove_unstructured_masks,
    token_layers,
)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_output_layers_follow_residual_adds_to_the_output():
    model = residual_skip_1d()
    found = output_layers(model, torch.randn(1, 3, 500))
    assert set(found) == {model.body[4], model.skip}


def test_structured_keeps_residual_net_consistent():
    model = tiny_resnet()
    x = torch.randn(2, 1, 64, 64)
    before, ref_shape = _params(model), model(x).shape
    result = prune_structured(model, x[:1], 0.5)
    assert model(x).shape == ref_shape
    assert _params(model) < 0.4 * before
    assert result.output_layers == ["head"] and result.narrowed_layers > 0
    # residual partners share their channel count after pruning
    block = model.stage2[0]
    assert block.body[3].out_channels == block.shortcut[0].out_channels == model.stage2[1].body[0].in_channels


def test_structured_prunes_monai_unet_with_residual_units_and_skip_concats():
    torch.manual_seed(0)
    model = UNet(2, 1, 1, channels=(8, 16, 32), strides=(2, 2), num_res_units=2).eval()
    x = torch.randn(1, 1, 64, 64)
    before = _params(model)
    result = prune_structured(model, x, 0.5)
    assert model(x).shape == (1, 1, 64, 64)
    assert _params(model) < 0.4 * before
    assert len(result.output_layers) == 2  # last transposed conv + its residual unit's conv


def test_token_layers_of_transformer_blocks_are_kept_whole():
    from medge.zoo import build_model

    model = build_model("cxr-hybrid-vit", pretrained=False)
    x = torch.randn(1, 1, 224, 224)
    found = token_layers(model, x)
    assert found and all(isinstance(m, torch.nn.Linear) for m in found)
    layers = dict(model.named_modules())
    mlp = [(layers[f"blocks.0.layers.{i}.mlp.0"], layers[f"blocks.0.layers.{i}.mlp.2"]) for i in (0, 1)]
    hidden = [fc1.out_features for fc1, _ in mlp]
    whole = [m for m in found if all(m is not fc1 and m is not fc2 for fc1, fc2 in mlp)]
    widths = [(m.in_features, m.out_features) for m in whole]
    before = _params(model)
    result = prune_structured(model, x, 0.5)
    assert model(x).shape == (1, 4)
    assert [(m.in_features, m.out_features) for m in whole] == widths  # qkv, proj: the embedding width
    embedding = layers["blocks.0.layers.0.attn.proj"].out_features
    for (fc1, fc2), width in zip(mlp, hidden):  # the MLP's hidden width is pruned; its ends keep the embedding
        assert fc1.out_features == fc2.in_features == width // 2
        assert fc1.in_features == fc2.out_features == embedding
    assert _params(model) < before and result.token_layers


@pytest.mark.parametrize("sparsity", [0.3, 0.7])
def test_unstructured_zero_fraction_matches_sparsity(sparsity):
    model = tiny_resnet()
    x = torch.randn(1, 1, 64, 64)
    params = prunable_weights(model, exclude=output_layers(model, x))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    apply_unstructured_masks(params, sparsity)
    result = remove_unstructured_masks(model, params)
    assert result.zero_fraction == pytest.approx(sparsity, abs=0.002)
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert model.head.weight.ne(0).all()  # output layer untouched


@pytest.mark.parametrize(
    ("width", "sparsity", "round_to", "kept"),
    [
        (64, 0.3, None, 44),  # int(64 * 0.7)
        (64, 0.3, 16, 48),  # nearest multiple of 16
        (48, 0.3, 16, 32),
        (16, 0.3, 16, 8),  # 16 would un-prune the layer: half the multiple
        (24, 0.3, 16, 16),
        (16, 0.2, 16, 16),  # neither 16 nor 8 is nearer to 12.8 than the full width: unpruned
        (32, 0.2, 16, 24),
        (12, 0.3, 16, 8),
        (12, 0.1, 16, 12),  # 8 is farther from 10.8 than the full width
    ],
)
def test_kept_channels_round_to_the_simd_width_without_unpruning_narrow_layers(width, sparsity, round_to, kept):
    assert kept_channels(width, sparsity, round_to) == kept


def test_round_to_prunes_the_narrow_full_resolution_layers():
    """us-frame-screen's 16-wide stem carries most of its latency: rounding must not leave it whole."""
    from medge.zoo import build_model

    model = build_model("us-frame-screen", pretrained=False).eval()
    x = torch.randn(1, 1, 128, 128)
    prune_structured(model, x, 0.3, round_to=16)
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths[0] == 8 and all(w % 8 == 0 for w in widths)
    assert model(x).shape == (1, 1)
