"""Spec strings, the paper's architectures, activations and Keras-equivalent initialisation."""
import math

import pytest
import torch

from gloro_repro.gloro import ARCHITECTURES, MinMax, build_network, make_activation, parse_spec
from gloro_repro.gloro.layers import LipschitzConv2d, LipschitzDense, init_weight_, tracked_layers


@pytest.mark.parametrize("name,shape,classes,widths", [
    ("digits", (1, 8, 8), 10, [16, 32, 100, 10]),
    ("2C2F", (1, 28, 28), 10, [16, 32, 100, 10]),
    ("4C3F", (1, 28, 28), 10, [32, 32, 64, 64, 512, 512, 10]),
    ("6C2F", (3, 32, 32), 10, [32, 32, 32, 64, 64, 64, 512, 10]),
    ("8C2F", (3, 64, 64), 200, [64, 64, 64, 128, 128, 128, 256, 256, 256, 200]),
    ("8C2F_supplement", (3, 64, 64), 200, [64, 64, 64, 128, 128, 256, 256, 200]),
])
def test_paper_architectures(name, shape, classes, widths):
    f = build_network(name, shape, classes, seed=0)
    layers = tracked_layers(f)
    assert [layer.weight.shape[0] for layer in layers] == widths
    assert f(torch.rand(2, *shape)).shape == (2, classes)


def test_2c2f_feature_map_sizes():
    convs = [m for m in tracked_layers(build_network("2C2F", (1, 28, 28), 10)) if isinstance(m, LipschitzConv2d)]
    assert [c.output_shape[1:] for c in convs] == [(14, 14), (7, 7)]


def test_custom_spec_and_activation_placement():
    f = build_network("c6k3s1-d4", (2, 5, 5), 4, activation="relu")
    kinds = [type(m).__name__ for m in f]
    assert kinds == ["LipschitzConv2d", "ReLU", "Flatten", "LipschitzDense"]


@pytest.mark.parametrize("spec,message", [
    ("c16k4-d10", "bad layer 'c16k4'"),
    ("d10-c16k3s1-d10", "'c16k3s1' after a dense layer"),
    ("c8k3s1-d10-r3-d10", "'r3' after a dense layer"),
    ("c8k3s1-r2-d10", "residual block 'r2' needs an odd kernel"),
    ("r3-d10", "residual block 'r3' needs a conv stem"),
    ("c8k3s1-r3x0-d10", "has a zero size"),
    ("c16k3s1", "the last layer must be dense"),
    ("c0k3s1-d10", "has a zero size"),
    ("3C3F", "bad layer '3C3F'"),
])
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)


def test_output_width_must_match_classes():
    with pytest.raises(ValueError, match="ends in d10, but the data has 200 classes"):
        build_network("c4k3s1-d10", (1, 4, 4), 200)


def test_unknown_activation_and_init():
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        make_activation("tanh")
    with pytest.raises(ValueError, match="unknown initialisation 'he'"):
        init_weight_(torch.empty(3, 3), "he")


def test_minmax_sorts_channel_pairs_and_is_one_lipschitz():
    x = torch.tensor([[3.0, -1.0, 1.0, 2.0]])  # halves (3, -1) and (1, 2)
    assert MinMax()(x).tolist() == [[1.0, -1.0, 3.0, 2.0]]
    a, b = torch.randn(100, 8, 3, 3), torch.randn(100, 8, 3, 3)
    assert ((MinMax()(a) - MinMax()(b)).flatten(1).norm(dim=1) <= (a - b).flatten(1).norm(dim=1) + 1e-6).all()
    with pytest.raises(ValueError, match="even number"):
        MinMax()(torch.randn(2, 3))


def test_minmax_training_path_matches_min_max_and_its_gradient():
    x = torch.randn(4, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    a, b = x.detach().chunk(2, dim=1)
    assert torch.equal(MinMax()(x), torch.cat([torch.minimum(a, b), torch.maximum(a, b)], dim=1))
    assert torch.autograd.gradcheck(MinMax(), (x,))
    tie = torch.tensor([[2.0, 2.0]], requires_grad=True)  # at a tie the permutation's gradient: unsplit
    MinMax()(tie).backward(torch.tensor([[3.0, 5.0]]))
    assert sorted(tie.grad[0].tolist()) == [3.0, 5.0]


def test_minmax_saves_a_mask_not_its_inputs():
    from gloro_repro.measure import saved_for_backward
    x = torch.randn(8, 16, 10, 10, requires_grad=True)
    with saved_for_backward() as saved:
        MinMax()(x)
    assert sum(saved.values()) == x.numel() // 2  # one byte per pair


def test_glorot_uniform_matches_keras_limits():
    conv = LipschitzConv2d(16, 32, 4, 2, (14, 14), init="default", generator=torch.Generator().manual_seed(0))
    limit = math.sqrt(6 / (16 * 16 + 32 * 16))  # Keras: fans count the receptive field
    w = conv.weight.detach()
    assert w.abs().max() <= limit and w.abs().max() > 0.99 * limit
    assert w.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0


def test_orthogonal_init_is_orthonormal():
    dense = LipschitzDense(50, 20, init="orthogonal")
    w = dense.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(20), atol=1e-5)
    conv = LipschitzConv2d(8, 4, 3, 1, (5, 5), init="orthogonal").weight.detach().reshape(4, -1)
    assert torch.allclose(conv @ conv.T, torch.eye(4), atol=1e-5)


def test_seed_fixes_weights_and_iterates():
    a, b = build_network("digits", (1, 8, 8), 10, seed=5), build_network("digits", (1, 8, 8), 10, seed=5)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_all_named_architectures_parse():
    for name in ARCHITECTURES:
        assert parse_spec(f"{ARCHITECTURES[name]}-d10")


def test_exported_minmax_network_runs_with_and_without_grad():
    f = build_network("2C2F", (1, 28, 28), 10, "minmax", "default", seed=0).eval()
    x = torch.rand(3, 1, 28, 28)
    program = torch.export.export(f, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)).module()
    with torch.no_grad():
        expected = f(x)
        assert torch.equal(program(x), expected)
    assert torch.equal(program(x).detach(), expected)  # grad mode on, as a user may call it


@pytest.mark.parametrize("name,shape,blocks", [("LiResNet-digits", (1, 8, 8), 1), ("LiResNet-S", (1, 28, 28), 3)])
def test_liresnets_are_chains_of_tracked_blocks_that_start_near_the_identity(name, shape, blocks):
    from gloro_repro.gloro import GloroNet, LipschitzResidualConv2d

    net = GloroNet(build_network(name, shape, 10, seed=0), eps=0.3)
    residual = [layer for layer in net.layers if isinstance(layer, LipschitzResidualConv2d)]
    assert len(residual) == blocks and all(layer.materialisable() for layer in net.layers)
    assert all(0.9 < layer.sound_bound().value < 1.6 for layer in residual)
    assert [type(m).__name__ for m in net.f][:4] == ["LipschitzConv2d", "MinMax", *(
        ["LipschitzResidualConv2d", "MinMax"] if name == "LiResNet-digits" else ["LipschitzConv2d", "MinMax"])]
    assert net.f(torch.rand(2, *shape)).shape == (2, 10)
    assert parse_spec("c8k3s1-r3x3-d10") == parse_spec("c8k3s1-r3-r3-r3-d10")
