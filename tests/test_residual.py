"""The residual block as one tracked layer: ``x + scale * conv_W(x) + b`` is a convolution with kernel
``I + scale * W``, and power iteration, both provable bounds, the rounding bound and the export
describe that merged operator."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gloro_repro.exported import ExportedModel
from gloro_repro.gloro import GloroNet, LipschitzDense, LipschitzResidualConv2d, MinMax, exact_spectral_norm, layers
from gloro_repro.gloro.rounding import logit_rounding_bound


def block(seed: int, channels: int = 4, kernel: int = 3, size: int = 6, scale: float = 0.7):
    layer = LipschitzResidualConv2d(channels, kernel, (size, size), scale, "orthogonal",
                                    torch.Generator().manual_seed(seed))
    with torch.no_grad():
        layer.bias.normal_(generator=torch.Generator().manual_seed(seed))
    return layer


@pytest.mark.parametrize("seed", range(3))
def test_the_block_computes_x_plus_its_scaled_convolution(seed):
    layer = block(seed)
    x = torch.randn(5, 4, 6, 6, dtype=torch.float64)
    w = layer.weight.detach().double()
    expected = x + 0.7 * F.conv2d(x, w, padding=1) + layer.bias.detach().double().view(1, -1, 1, 1)
    torch.testing.assert_close(copy.deepcopy(layer).double()(x), expected, rtol=0, atol=1e-12)
    assert layer.output_shape == (4, 6, 6)


@pytest.mark.parametrize("seed,kernel,scale", [(0, 3, 0.7), (1, 1, 2.0), (2, 5, -1.5), (3, 3, 1e-3)])
def test_power_iteration_and_both_provable_bounds_against_the_exact_merged_norm(seed, kernel, scale, monkeypatch):
    layer = block(seed, kernel=kernel, scale=scale)
    exact = exact_spectral_norm(layer)
    layer.converge(1e-8)
    assert layer.lipschitz().item() == pytest.approx(exact, rel=1e-4)
    near = layer.sound_bound()
    assert near.method == "near-exact" and exact <= near.value <= exact * (1 + 1e-5)
    monkeypatch.setattr(layers, "EXACT_MAX_SIDE", 0)
    circular = layer.sound_bound()
    assert circular.method == "circular" and exact <= circular.value


def test_the_identity_is_not_forgotten():
    """With W = 0 the block is the identity: norm 1 exactly, not 0."""
    layer = block(0)
    with torch.no_grad():
        layer.weight.zero_()
    assert exact_spectral_norm(layer) == 1.0
    assert 1.0 <= layer.sound_bound().value <= 1 + 1e-5


def net(seed: int = 0) -> GloroNet:
    g = torch.Generator().manual_seed(seed)
    f = nn.Sequential(block(seed), MinMax(), block(seed + 1, scale=1.0), MinMax(), nn.Flatten(),
                      LipschitzDense(144, 10, generator=g))
    with torch.no_grad():
        for layer in f:
            if hasattr(layer, "weight"):
                layer.weight.mul_(3)  # large weights, large rounding errors
    return GloroNet(f, eps=0.1).eval()


def test_the_rounding_bound_covers_the_float32_pass():
    model = net()
    x = torch.rand(64, 4, 6, 6)
    with torch.no_grad():
        error = (model.f(x).double() - copy.deepcopy(model.f).double()(x.double())).abs()
    per_input = logit_rounding_bound(model.f, x)
    assert (error <= per_input).all() and (error > 0).any()
    assert (per_input <= logit_rounding_bound(model.f, input_shape=(4, 6, 6))).all()


def test_a_residual_network_exports_and_certifies_from_its_files(tmp_path):
    model = net()
    model.converge()
    x = torch.rand(64, 4, 6, 6)
    ExportedModel.of(model).save(tmp_path, {})
    loaded = ExportedModel.load(tmp_path)
    for bound in ("power", "sound"):
        ours, theirs = model.certify(x, bound=bound), loaded.certify(x, bound=bound)
        assert torch.equal(ours.prediction, theirs.prediction)
        if bound == "power":
            assert torch.equal(ours.certified, theirs.certified)
    torch.testing.assert_close(loaded.k_sound, model.margin_bounds("sound"))


def test_the_block_needs_a_centre_tap():
    with pytest.raises(ValueError, match="odd kernel"):
        LipschitzResidualConv2d(4, 2, (6, 6))
