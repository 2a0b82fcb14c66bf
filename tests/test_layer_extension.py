"""A Lipschitz layer and an activation the core does not know, defined here: power iteration, the
provable norm bound, the rounding bound, certification and the export work without touching the core."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from test_certification import broken_certificates
from torch import nn

from gloro_repro.exported import ExportedModel
from gloro_repro.gloro import (
    EpsSchedule,
    GloroNet,
    LambdaSchedule,
    LipschitzDense,
    LipschitzLinear,
    LRSchedule,
    MinMax,
    TrainingSchedule,
    exact_spectral_norm,
    layers,
)
from gloro_repro.gloro.fit import fit
from gloro_repro.gloro.rounding import logit_rounding_bound


class ValidConv2d(LipschitzLinear):
    """A stride-1 convolution without padding ('valid'): output ``[N, C_out, H-k+1, W-k+1]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, input_size: tuple[int, int],
                 generator: torch.Generator | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.orthogonal_(self.weight, generator=generator)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self._register_iterate((1, in_channels, *input_size), generator)

    def linear_map(self, x, weight=None):
        return F.conv2d(x, self.weight if weight is None else weight)

    def adjoint_map(self, y, weight=None):
        return F.conv_transpose2d(y, self.weight if weight is None else weight)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias)


class HalfReLU(nn.Module):
    """relu(x) / 2: 1/2-Lipschitz, and computed exactly (halving is exact in floating point)."""

    lipschitz = 0.5

    def forward(self, x):
        return F.relu(x) / 2

    @staticmethod
    def propagate_bound(bound):
        return bound / 2


def network(seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    return nn.Sequential(ValidConv2d(1, 8, 3, (8, 8), g), MinMax(), ValidConv2d(8, 16, 3, (6, 6), g), HalfReLU(),
                         nn.Flatten(), LipschitzDense(16 * 4 * 4, 10, generator=g))


@pytest.fixture(scope="module")
def trained(digits):
    x, y = digits[0], digits[1]
    schedule = TrainingSchedule(0, EpsSchedule.parse("single", 0.3, 10), LambdaSchedule.parse("1.5"),
                                LRSchedule.parse(None, 1e-3, 10))
    return fit(GloroNet(network(), eps=0.3), x, y, schedule, batch_size=64)


def test_power_iteration_and_the_provable_bound_on_the_new_layer():
    layer = network()[2]
    layer.converge(1e-7)
    exact = exact_spectral_norm(layer)
    assert layer.lipschitz().item() == pytest.approx(exact, rel=1e-4)
    sound = layer.sound_bound()
    assert sound.method == "near-exact" and exact <= sound.value <= exact * (1 + 1e-9)
    assert layer.output_shape == (16, 4, 4) and layer.terms_per_output == 8 * 3 * 3


def test_a_layer_too_large_to_materialise_must_bring_its_own_bound(monkeypatch):
    monkeypatch.setattr(layers, "EXACT_MAX_SIDE", 0)
    with pytest.raises(ValueError, match="override sound_bound"):
        network()[0].sound_bound()


def test_the_activation_constant_enters_the_margin_bounds(trained):
    assert trained.activation_lipschitz == 0.5
    assert trained.layer_product("power") == pytest.approx(
        0.5 * torch.stack([layer.lipschitz() for layer in trained.layers]).prod().item())


def test_rounding_bound_covers_the_float32_error(trained, digits):
    x = digits[2]
    with torch.no_grad():
        error = (trained.f(x).double() - copy.deepcopy(trained.f).double()(x.double())).abs()
    bound = logit_rounding_bound(trained.f, x)
    assert (error <= bound).all() and (bound < 1e-3).all()
    assert (error <= logit_rounding_bound(trained.f, input_shape=(1, 8, 8))).all()


@pytest.mark.parametrize("bound", ["power", "sound"])
def test_certificates_of_the_new_network_hold(trained, digits, bound):
    x = digits[2]
    cert = trained.certify(x, bound=bound)
    assert cert.certified.float().mean() > 0.3
    certified, broken = broken_certificates(trained, x, trained.margin_bounds(bound), 0.3)
    assert broken == 0 and certified == int(cert.certified.sum())


def test_the_new_network_exports_and_certifies_from_its_files(trained, digits, tmp_path):
    x = digits[2]
    ExportedModel.of(trained).save(tmp_path, {})
    model = ExportedModel.load(tmp_path)
    for bound in ("power", "sound"):
        assert torch.equal(model.certify(x, bound=bound).certified, ExportedModel.of(trained).certify(x, bound=bound)
                           .certified)
