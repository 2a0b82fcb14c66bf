"""GloroNet: margin bounds, bottom logit, ties, certificates, metrics."""
import copy
import math

import pytest
import torch

from gloro_repro.gloro import GloroNet, build_network, certify_logits, clean_accuracy, rejection_rate, vra
from gloro_repro.gloro.model import bottom_logit, certified_radius, gloro_logits, gloro_prediction


def small_net(activation="minmax", seed=0):
    net = GloroNet(build_network("c4k3s1-c8k4s2-d16-d5", (2, 6, 6), 5, activation, seed=seed), eps=0.5)
    net.converge(tol=1e-8)
    return net.eval()


def margin_slopes(f, x1, x2):
    """``|(f_i - f_j)(x1) - (f_i - f_j)(x2)| / ||x1 - x2||`` for every pair, in float64. ``[N, m, m]``."""
    with torch.no_grad():
        delta = f(x1).double() - f(x2).double()
    dist = (x1 - x2).flatten(1).double().norm(dim=1)
    return (delta[:, :, None] - delta[:, None, :]).abs() / dist[:, None, None]


def steepest_pairs(f, x, i, j, h=1e-3):
    """Pairs stepping from x along the gradient of the margin f_j - f_i (the locally steepest way)."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((f(x)[:, j] - f(x)[:, i]).sum(), x)
    return x.detach(), x.detach() + h * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


@pytest.mark.parametrize("activation", ["minmax", "relu"])
@pytest.mark.parametrize("bound", ["power", "sound"])
def test_k_ij_bounds_sampled_margin_slopes(activation, bound):
    torch.manual_seed(0)
    net = small_net(activation)
    k = net.margin_bounds(bound).double()
    x1 = torch.rand(2000, 2, 6, 6)
    far, near = torch.rand_like(x1), x1 + 1e-2 * torch.randn_like(x1)
    steepest = [steepest_pairs(net.f, x1[:200], i, j) for i in range(5) for j in range(5) if i != j]
    for a, b in [(x1, far), (x1, near), *steepest]:
        assert (margin_slopes(net.f, a, b) <= k + 1e-9).all()


def test_k_ij_is_attained_by_a_linear_network():
    """For f(x) = W x the margin's Lipschitz constant is exactly ||w_j - w_i||: the check is tight."""
    net = GloroNet(build_network("d5", (1, 3, 3), 5, seed=1), eps=0.1).eval()
    k = net.k_ij().double()
    best = torch.zeros(5, 5, dtype=torch.float64)
    for i in range(5):
        for j in range(5):
            if i != j:
                pairs = steepest_pairs(net.f, torch.rand(4, 1, 3, 3), i, j, h=0.1)
                best = torch.maximum(best, margin_slopes(net.f, *pairs).amax(0))
    assert torch.allclose(best, k, rtol=1e-4)


def test_sound_margin_bounds_are_above_power_bounds():
    net = small_net()
    assert (net.k_ij_sound() >= net.k_ij().double()).all()
    assert net.layer_product("sound") >= net.layer_product("power")


def test_bottom_logit_uses_the_predicted_class():
    logits = torch.tensor([[3.0, 1.0, 0.0]])
    k = torch.tensor([[0.0, 2.0, 1.0], [2.0, 0.0, 4.0], [1.0, 4.0, 0.0]])
    # j = 0: max(1 + 0.5 * 2, 0 + 0.5 * 1) = 2
    assert bottom_logit(logits, k, 0.5).item() == 2.0
    out = gloro_logits(logits, k, 0.5)
    assert out.shape == (1, 4) and gloro_prediction(out).item() == 0


def test_ties_give_one_bottom_logit_and_no_certificate():
    logits = torch.tensor([[2.0, 2.0, 0.0], [1.0, 1.0, 1.0], [5.0, 0.0, 0.0]])
    k = torch.ones(3, 3) - torch.eye(3)
    for eps in (0.0, 0.3):
        out = gloro_logits(logits, k, eps)
        assert out.shape == (3, 4) and torch.isfinite(out).all()
        cert = certify_logits(logits, k, eps)
        assert cert.prediction.tolist() == [0, 0, 0]  # first index on ties, one class each
        assert cert.certified.tolist() == [False, False, True]
        assert cert.radius[:2].tolist() == [0.0, 0.0]


def test_certified_exactly_when_radius_exceeds_eps():
    torch.manual_seed(1)
    logits = torch.randn(500, 6) * 3
    w = torch.randn(6, 4)
    k = torch.linalg.vector_norm(w[None] - w[:, None], dim=-1)
    radius = certified_radius(logits, k)
    for eps in (0.1, 0.5, 1.0):
        cert = certify_logits(logits, k, eps)
        away = (radius - eps).abs() > 1e-4
        assert torch.equal(cert.certified[away], (radius > eps)[away])


def test_zero_margin_bound_gives_infinite_radius():
    logits = torch.tensor([[1.0, 0.0]])
    assert math.isinf(certified_radius(logits, torch.zeros(2, 2)).item())


def test_metrics():
    gloro = torch.tensor([[3.0, 0.0, 1.0], [0.0, 3.0, 4.0], [2.0, 1.0, 2.0]])  # last is bottom
    labels = torch.tensor([0, 1, 0])
    assert vra(gloro, labels) == pytest.approx(1 / 3)  # third: tie with bottom is a rejection
    assert rejection_rate(gloro) == pytest.approx(2 / 3)
    assert clean_accuracy(gloro[:, :2], labels) == pytest.approx(1.0)


def test_training_forward_iterates_and_eval_does_not():
    net = GloroNet(build_network("c4k3s1-d3", (1, 4, 4), 3, seed=0), eps=0.1, power_iterations=2)
    u0 = net.layers[0].u.clone()
    net.eval()(torch.rand(2, 1, 4, 4))
    assert torch.equal(net.layers[0].u, u0)
    net.train()(torch.rand(2, 1, 4, 4))
    assert not torch.equal(net.layers[0].u, u0)


def test_training_forward_leaves_the_last_layers_iterate_and_equals_iterating_first():
    net = GloroNet(build_network("c4k3s1-d8-d3", (1, 4, 4), 3, seed=0), eps=0.1, power_iterations=3).train()
    reference, start = copy.deepcopy(net), copy.deepcopy(net)
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    logits, k_ij = net.logits_and_bounds(x)
    for layer in reference.layers[:-1]:  # the order the eager loop always had: iterate, then forward
        layer.power_iterate(3)
    assert torch.equal(logits, reference.f(x)) and torch.equal(k_ij, reference.k_ij())
    assert all(torch.equal(a.u, b.u) for a, b in zip(net.layers, reference.layers))
    assert torch.equal(net.layers[-1].u, start.layers[-1].u)  # K_ij takes its row differences, not its norm


def test_loss_gradient_reaches_every_weight_through_the_bound():
    net = GloroNet(build_network("c4k3s1-d8-d3", (1, 4, 4), 3, seed=0), eps=0.5).train()
    net(torch.rand(8, 1, 4, 4))[:, -1].sum().backward()  # the bottom logit depends on K_ij
    for layer in net.layers:
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
        assert layer.u.grad is None


def test_gloronet_rejects_layers_it_cannot_bound():
    f = torch.nn.Sequential(*build_network("d4-d3", (1, 2, 2), 3), torch.nn.Tanh())
    with pytest.raises(ValueError, match="cannot bound"):
        GloroNet(f, eps=0.1)


def test_unknown_bound_name():
    with pytest.raises(ValueError, match="unknown bound 'exact'"):
        small_net().margin_bounds("exact")


def test_certify_logits_agrees_with_the_gloro_prediction_including_ties():
    g = torch.Generator().manual_seed(0)
    logits = torch.randint(-3, 4, (500, 5), generator=g).float() / 2  # many exact ties
    k = torch.rand(5, 5, generator=g)
    k = (k + k.T).fill_diagonal_(0)
    for eps in (0.0, 0.5, 2.0):
        cert = certify_logits(logits, k, eps)
        assert torch.equal(cert.certified, gloro_prediction(gloro_logits(logits, k, eps)) != 5)
        assert torch.equal(cert.radius, certified_radius(logits, k))
