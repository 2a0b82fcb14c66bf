"""The core's door: GloroNet accepts only networks it can prove it bounds, certifies with the
provable bound by default, and never uses power-iteration iterates that are stale for the weights."""
from __future__ import annotations

import time

import pytest
import torch
from test_certification import broken_certificates
from torch import nn

from gloro_repro.exported import ExportedModel
from gloro_repro.gloro import (
    GloroNet,
    LipschitzConv2d,
    LipschitzDense,
    LipschitzResidualConv2d,
    MinMax,
    StaleIteratesError,
    UnboundableNetworkError,
    build_network,
    certify_logits,
    exact_spectral_norm,
    global_lower_bound,
)
from gloro_repro.gloro.rounding import logit_rounding_bound


def dense(i: int, o: int, seed: int = 0) -> LipschitzDense:
    return LipschitzDense(i, o, generator=torch.Generator().manual_seed(seed))


class Residual(nn.Module):
    """act(x + 3 dense(x)): a residual add the chain cannot see."""

    def __init__(self):
        super().__init__()
        self.dense, self.act = dense(8, 8), MinMax()

    def forward(self, x):
        return self.act(x + 3 * self.dense(x))


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = dense(8, 8)

    def forward(self, x):
        return 10 * self.dense(x)


class Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = dense(8, 8, 1), dense(8, 8, 2)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=1)[:, :8]


class Reordered(nn.Module):
    """Registers second before first, runs first before second."""

    def __init__(self):
        super().__init__()
        self.second, self.first = dense(8, 4, 1), dense(8, 8, 2)

    def forward(self, x):
        return self.second(self.first(x))


class Doubled(nn.Sequential):
    def forward(self, x):
        return 2 * super().forward(x)


class Outer(LipschitzDense):
    """A tracked layer whose forward also runs a tracked layer it contains."""

    def __init__(self):
        super().__init__(8, 8)
        self.inner = dense(8, 8)

    def forward(self, x):
        return super().forward(self.inner(x))


def refused_networks():
    shared = dense(8, 8)
    hooked = dense(8, 8)
    hooked.register_forward_hook(lambda module, args, out: 5 * out)
    return {
        "residual container": (nn.Sequential(Residual(), dense(8, 4)), "f.0 (Residual)"),
        "scaling": (nn.Sequential(Scaled(), MinMax(), dense(8, 4)), "f.0 (Scaled)"),
        "parallel branches": (nn.Sequential(Branches(), dense(8, 4)), "f.0 (Branches)"),
        "custom container": (Reordered(), "f (Reordered)"),
        "Sequential subclass with a forward": (nn.Sequential(dense(8, 8), Doubled(MinMax(), dense(8, 4))),
                                               "f.1 (Doubled)"),
        "tracked layer used twice": (nn.Sequential(shared, MinMax(), shared, MinMax(), dense(8, 4)),
                                     "f.2 (LipschitzDense)"),
        "activation without a constant": (nn.Sequential(dense(8, 8), nn.Tanh(), dense(8, 4)), "f.1 (Tanh)"),
        "dropout": (nn.Sequential(dense(8, 8), nn.Dropout(0.5), dense(8, 4)), "f.1 (Dropout)"),
        "forward hook": (nn.Sequential(hooked, MinMax(), dense(8, 4)), "f.0 (LipschitzDense)"),
        "tracked layer containing one": (nn.Sequential(Outer(), MinMax(), dense(8, 4)), "f.0 (Outer)"),
        "activation after the logits": (nn.Sequential(dense(8, 8), MinMax(), dense(8, 4), MinMax()), "f.3 (MinMax)"),
        "not ending in a dense layer": (nn.Sequential(dense(8, 8), MinMax()), "f.1 (MinMax)"),
    }


@pytest.mark.parametrize("case", list(refused_networks()))
def test_what_the_core_cannot_bound_is_refused_with_its_path_and_type(case):
    f, where = refused_networks()[case]
    with pytest.raises(UnboundableNetworkError, match=f"cannot bound {where.replace('(', '[(]').replace(')', '[)]')}"
                       ".*nn.Sequential of tracked layers"):
        GloroNet(f, eps=0.1)


def test_subclasses_and_the_rounding_bound_refuse_the_same_networks():
    class Mine(GloroNet):
        pass

    f, _ = refused_networks()["residual container"]
    with pytest.raises(UnboundableNetworkError, match="f.0 .Residual."):
        Mine(f, eps=0.1)
    with pytest.raises(UnboundableNetworkError, match="f.0 .Residual."):
        logit_rounding_bound(f, input_shape=(8,))


def test_a_network_changed_after_construction_is_refused():
    net = GloroNet(nn.Sequential(dense(8, 8), MinMax(), dense(8, 4)), eps=0.1)
    net.f[1] = nn.Tanh()
    with pytest.raises(UnboundableNetworkError, match="f.1 .Tanh."):
        net.certify(torch.rand(3, 8))
    net.f[1] = MinMax()
    net.f.append(MinMax())
    with pytest.raises(UnboundableNetworkError):
        net.certify(torch.rand(3, 8))


def the_residual_as_a_tracked_layer() -> nn.Sequential:
    """The issue's act(x + 3 W x) written the sound way: one 1x1 residual conv on a 1x1 grid."""
    g = torch.Generator().manual_seed(0)
    return nn.Sequential(nn.Unflatten(1, (8, 1, 1)), LipschitzResidualConv2d(8, 1, (1, 1), scale=3.0, generator=g),
                         MinMax(), nn.Flatten(), LipschitzDense(8, 4, generator=g))


def nested() -> nn.Sequential:
    g = torch.Generator().manual_seed(3)
    return nn.Sequential(nn.Sequential(LipschitzConv2d(1, 4, 3, 1, (6, 6), generator=g), MinMax()),
                         nn.Sequential(nn.Sequential(LipschitzResidualConv2d(4, 3, (6, 6), 0.5, generator=g),
                                                     nn.ReLU()), nn.Flatten()),
                         LipschitzDense(144, 5, generator=g))


@pytest.mark.parametrize("name,build,shape", [("residual block as a tracked layer", the_residual_as_a_tracked_layer,
                                               (8,)),
                                              ("nested Sequentials with a residual conv", nested, (1, 6, 6))])
def test_accepted_compositions_are_sound(name, build, shape, report):
    net = GloroNet(build(), eps=0.1).eval()
    net.converge(1e-7)
    pool = torch.rand(256, *shape)
    k_sound = net.margin_bounds("sound")
    slope = global_lower_bound(net.f, pool, pairs=16, steps=300, lr=1e-2,
                               generator=torch.Generator().manual_seed(0)).value
    assert slope <= float(k_sound.max()), "a margin grows faster than its provable bound"
    assert float(net.margin_bounds("power").detach().max()) <= float(k_sound.max())
    with torch.no_grad():
        radius = net.certify(pool).radius
    eps = float(radius[radius > 0].median())
    certified, broken = broken_certificates(net, pool, k_sound.float(), eps)
    assert certified > 0 and broken == 0
    report(f"core's door, {name}: provable max K_ij {float(k_sound.max()):.3g} >= largest margin slope found "
           f"{slope:.3g}; at eps {eps:.3g} {certified}/{len(pool)} certified, {broken} broken by PGD")


def test_the_issues_networks_re_measured(report):
    """The issue's counts: a fresh digits-size network (no converge) at eps 0.05 on 200 random inputs."""
    net = GloroNet(build_network("digits", (1, 8, 8), 10, "minmax", "orthogonal", seed=0), eps=0.05).eval()
    x = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stale = int(certify_logits(net.f(x), net.k_ij(), 0.05).certified.sum())  # what the old default did
    default = int(net.certify(x).certified.sum())
    with pytest.raises(StaleIteratesError, match="converge"):
        net.certify(x, bound="power")
    net.converge()
    power = int(net.certify(x, bound="power").certified.sum())
    assert default <= power < stale
    report(f"core's door, fresh digits net (MinMax, orthogonal) eps 0.05, 200 random inputs: the stale iterates "
           f"would certify {stale}; default certify (provable) {default}; the power bound refused until "
           f"converge(), then {power}")


def test_stale_iterates_are_refused_wherever_the_power_bound_is_used():
    f = build_network("c4k3s1-d10", (1, 6, 6), 10, seed=1)
    net = GloroNet(f, eps=0.1).eval()
    x = torch.rand(20, 1, 6, 6)
    for use in (lambda: net.margin_bounds("power"), lambda: net.certify(x, bound="power"),
                lambda: ExportedModel.of(net)):
        with pytest.raises(StaleIteratesError):
            use()
    net.converge()
    net.certify(x, bound="power")
    fresh = GloroNet(build_network("c4k3s1-d10", (1, 6, 6), 10, seed=2), eps=0.1).eval()
    fresh.load_state_dict(net.state_dict())  # the digest travels with the weights and iterates
    assert torch.equal(fresh.certify(x, bound="power").certified, net.certify(x, bound="power").certified)
    old = {k: v for k, v in net.state_dict().items() if not k.endswith("converged_for")}
    fresh.load_state_dict(old)  # a checkpoint from before the digest loads, as not converged
    with pytest.raises(StaleIteratesError):
        fresh.certify(x, bound="power")
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()(x)[:, 0].sum().backward()
    optimiser.step()
    with pytest.raises(StaleIteratesError, match=r"\[0, 1\]"):
        net.eval().certify(x, bound="power")
    net.layers[0].converge(tol=1e-12, max_iter=1)  # stops before converging: still stale
    assert not net.layers[0].is_converged()


def test_sound_bounds_are_computed_once_per_weights(monkeypatch, report):
    net = GloroNet(build_network("2C2F", (1, 28, 28), 10, seed=0), eps=0.3).eval()
    x = torch.rand(8, 1, 28, 28)
    start = time.perf_counter()
    first = net.certify(x)
    cold = time.perf_counter() - start
    calls = []
    for layer in net.layers:
        monkeypatch.setattr(layer, "sound_bound", lambda layer=layer: calls.append(layer) or type(layer).sound_bound(
            layer))
    start = time.perf_counter()
    again = net.certify(x)
    warm = time.perf_counter() - start
    assert calls == [] and torch.equal(first.certified, again.certified) and torch.equal(first.radius, again.radius)
    with torch.no_grad():
        net.layers[1].weight.mul_(0.5)
    net.certify(x)
    assert calls == [net.layers[1]], "only the changed layer's bound is recomputed"
    report(f"core's door, 2C2F certify(sound) of 8 inputs: {cold:.2f} s with the bounds computed, {warm:.3f} s "
           "with them cached")


@pytest.mark.parametrize("seed", range(12))
def test_random_networks_from_allowed_pieces_are_sound(seed):
    """Property: random chains of convs, residual convs, dense layers, activations and nested
    Sequentials: every provable layer bound covers the exact norm, the provable K covers the margin
    slopes gradient ascent finds, and no certified point is broken."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda n: int(torch.randint(n, (1,), generator=g))
    act = lambda: [MinMax, nn.ReLU][pick(2)]()
    channels, size, links = 1, 6, []
    for _ in range(pick(3)):
        conv = LipschitzConv2d(channels, 2 * (1 + pick(3)), 1 + pick(4), 1 + pick(2), (size, size),
                               ["default", "orthogonal"][pick(2)], g)
        channels, size, _ = conv.output_shape
        links += [conv, act()]
        if pick(2):
            links += [nn.Sequential(LipschitzResidualConv2d(channels, [1, 3][pick(2)], (size, size),
                                                            [0.5, 1.0, 2.0][pick(3)], generator=g), act())]
    links.append(nn.Flatten())
    width = channels * size * size
    for _ in range(pick(2)):
        links += [LipschitzDense(width, 6, generator=g), act()]
        width = 6
    links.append(LipschitzDense(width, 4, generator=g))
    cut = pick(len(links))
    f = nn.Sequential(*links[:cut], nn.Sequential(*links[cut:])) if cut else nn.Sequential(*links)
    net = GloroNet(f, eps=0.1).eval()
    for layer in net.layers:
        exact = exact_spectral_norm(layer)
        assert exact <= layer.sound_bound().value <= exact * (1 + 1e-5)
    pool = torch.rand(128, 1, 6, 6, generator=g)
    k_sound = net.margin_bounds("sound")
    slope = global_lower_bound(net.f, pool, pairs=8, steps=150, lr=1e-2, generator=g).value
    assert slope <= float(k_sound.max())
    with torch.no_grad():
        radius = net.certify(pool).radius
    if (radius > 0).any():
        certified, broken = broken_certificates(net, pool, k_sound.float(), float(radius[radius > 0].median()))
        assert broken == 0
