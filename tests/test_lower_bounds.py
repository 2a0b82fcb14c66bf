"""Appendix F lower bounds: below the upper bound, and tight where the answer is known."""
import pytest
import torch

from gloro_repro.gloro import GloroNet, build_network, global_lower_bound, local_lower_bound


def test_global_lower_bound_reaches_a_linear_network_constant():
    """For f = W x + b the margin slope is at most max ||w_j - w_i||, and ascent attains it."""
    torch.manual_seed(0)
    net = GloroNet(build_network("d4", (1, 3, 3), 4, seed=0), eps=0.1).eval()
    pool = torch.rand(30, 1, 3, 3)
    bound = global_lower_bound(net.f, pool, pairs=10, steps=300, lr=1e-2, generator=torch.Generator().manual_seed(0))
    k_max = net.k_ij().max().item()
    assert bound.value <= k_max * (1 + 1e-6)
    assert bound.value >= 0.95 * k_max
    assert bound.per_start.shape == (10,)


@pytest.mark.parametrize("activation", ["minmax", "relu"])
def test_lower_bounds_stay_below_the_upper_bound(activation):
    torch.manual_seed(1)
    net = GloroNet(build_network("c4k3s1-c8k4s2-d16-d5", (1, 6, 6), 5, activation, seed=1), eps=0.3)
    net.converge(tol=1e-8)
    pool = torch.rand(40, 1, 6, 6)
    g = torch.Generator().manual_seed(1)
    upper = net.k_ij_sound().max().item()
    global_lb = global_lower_bound(net.f, pool, pairs=8, steps=100, lr=1e-2, generator=g)
    local_lb = local_lower_bound(net.f, pool, eps=0.3, centres=8, steps=100, lr=1e-2, generator=g)
    assert 0 < local_lb.value <= upper and 0 < global_lb.value <= upper
    assert local_lb.value == pytest.approx(local_lb.per_start.mean().item())


def test_more_steps_do_not_lower_the_bound():
    net = GloroNet(build_network("c4k3s1-d5", (1, 5, 5), 5, "relu", seed=2), eps=0.3)
    pool = torch.rand(20, 1, 5, 5, generator=torch.Generator().manual_seed(2))
    short = global_lower_bound(net.f, pool, pairs=6, steps=5, generator=torch.Generator().manual_seed(3))
    long = global_lower_bound(net.f, pool, pairs=6, steps=200, generator=torch.Generator().manual_seed(3))
    assert (long.per_start >= short.per_start - 1e-9).all()
