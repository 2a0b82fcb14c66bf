"""Floating-point soundness: the rounding bound covers the real float32 error, and the implemented
margin test rejects a case the float32 test alone gets wrong."""
from __future__ import annotations

import pytest
import torch

from gloro_repro.gloro import build_network
from gloro_repro.gloro.layers import LipschitzDense
from gloro_repro.gloro.model import certify_logits
from gloro_repro.gloro.rounding import logit_rounding_bound


@pytest.mark.parametrize("arch, activation", [("digits", "minmax"), ("digits", "relu"), ("c8k4s2-d16-d10", "minmax")])
def test_rounding_bound_covers_the_float32_error(arch, activation, report):
    for seed in range(3):
        f = build_network(arch, (1, 8, 8), 10, activation, "default", seed=seed)
        with torch.no_grad():
            for layer in f:
                if hasattr(layer, "bias"):
                    layer.bias.normal_(0, 1, generator=torch.Generator().manual_seed(seed))
                    layer.weight.mul_(3)  # large logits, large rounding errors
            x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
            error = (f(x).double() - f.double()(x.double())).abs()
            f.float()
            per_input = logit_rounding_bound(f, x)
            worst_case = logit_rounding_bound(f, input_shape=(1, 8, 8))
        assert (error <= per_input).all() and (per_input <= worst_case).all()
        assert (error > 0).any(), "the float32 pass should actually round"
    report(f"float32 rounding, {arch} {activation} (weights x3): largest actual logit error {error.max():.1e}, "
           f"per-input bound {per_input.max():.1e}, input-independent bound {worst_case.max():.1e}")


def rounding_trap(trials: int = 2000):
    """A dense classifier, an input and an eps where the float32 margin test certifies but the
    exact margin is below eps * K."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(trials):
        layer = LipschitzDense(256, 2, generator=generator)
        with torch.no_grad():
            layer.weight.normal_(0, 100, generator=generator)
        f = torch.nn.Sequential(torch.nn.Flatten(), layer)
        x = torch.rand(1, 256, generator=generator)
        with torch.no_grad():
            logits32 = f(x)
            exact = f.double()(x.double())
            f.float()
        j = int(logits32.argmax())
        margin32 = float(logits32[0, j].double() - logits32[0, 1 - j].double())
        margin_exact = float(exact[0, j] - exact[0, 1 - j])
        k = float((layer.weight[0].double() - layer.weight[1].double()).norm())
        if margin32 > margin_exact > 0:
            eps = (0.25 * margin_exact + 0.75 * margin32) / k
            k_ij = torch.tensor([[0.0, k], [k, 0.0]], dtype=torch.float64)
            if certify_logits(logits32, k_ij, eps).certified.item() and margin_exact < eps * k:
                return f, x, logits32, k_ij, eps
    raise AssertionError("no rounding trap found")


def test_float32_margin_test_alone_is_fooled_by_rounding_but_ours_is_not():
    f, x, logits32, k_ij, eps = rounding_trap()
    assert certify_logits(logits32, k_ij, eps).certified.item(), "float32 alone certifies"
    ours = certify_logits(logits32, k_ij, eps, logit_rounding_bound(f, x))
    assert not ours.certified.item(), "the implemented float32 test accounts for rounding"
    with torch.no_grad():
        f64 = f.double()
        ours64 = certify_logits(f64(x.double()), k_ij, eps, logit_rounding_bound(f64, input_shape=(256,),
                                                                                 dtype=torch.float64))
    assert not ours64.certified.item(), "certifying in float64 gets it right too"
