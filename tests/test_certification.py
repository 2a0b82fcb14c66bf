"""Theorem 4 in practice: no certified point is broken by a strong L2 PGD attack at eps.

The same check, run against margin bounds deliberately weakened tenfold, must find broken
certificates: that shows the attack is strong enough for the test to fail.
"""
import pytest
import torch

from gloro_repro.data.mnist import read_mnist_split
from gloro_repro.gloro import (
    EpsSchedule,
    GloroNet,
    LambdaSchedule,
    LRSchedule,
    TrainingSchedule,
    build_network,
    certify_logits,
    pgd_l2,
    vra,
)
from gloro_repro.gloro.fit import fit


def train_minmax(x, y, arch, eps, epochs, batch_size, seed=0):
    net = GloroNet(build_network(arch, tuple(x.shape[1:]), 10, "minmax", "orthogonal", seed=seed), eps, 5)
    schedule = TrainingSchedule(0, EpsSchedule.parse("single", eps, epochs), LambdaSchedule.parse("1.5"),
                                LRSchedule.parse(None, 1e-3, epochs))
    return fit(net, x, y, schedule, batch_size, seed=seed)


def broken_certificates(net, x, k_ij, eps):
    """(certified, broken): certified points whose prediction strong PGD changes within eps."""
    with torch.no_grad():
        cert = certify_logits(net.f(x), k_ij, eps)
    xs, ys = x[cert.certified], cert.prediction[cert.certified]
    broken = torch.zeros(len(xs), dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    for objective, steps, restarts in (("ce", 100, 5), ("margin", 50, 2)):
        adv = pgd_l2(net.f, xs, ys, eps, steps=steps, restarts=restarts, objective=objective, generator=g)
        assert (adv - xs).flatten(1).norm(dim=1).max() <= eps * (1 + 1e-5)
        with torch.no_grad():
            broken |= net.f(adv).argmax(dim=1) != ys
    return len(xs), int(broken.sum())


@pytest.fixture(scope="module")
def digits_net(digits):
    x_train, y_train, _, _ = digits
    return train_minmax(x_train, y_train, "digits", eps=0.3, epochs=25, batch_size=64)


@pytest.mark.parametrize("bound", ["power", "sound"])
def test_no_certified_digit_is_broken(digits_net, digits, bound, report):
    x_test = digits[2]
    certified, broken = broken_certificates(digits_net, x_test, digits_net.margin_bounds(bound), 0.3)
    assert certified >= 0.5 * len(x_test)
    assert broken == 0
    report(f"Theorem 4, digits eps 0.3 ({bound} bound): {certified}/{len(x_test)} certified, {broken} broken by PGD")


def test_weakened_bound_is_caught_on_digits(digits_net, digits, report):
    certified, broken = broken_certificates(digits_net, digits[2], digits_net.k_ij() * 0.1, 0.3)
    assert broken > 0
    report(f"K scaled by 0.1, digits: {broken}/{certified} false certificates found by PGD")


def test_vra_is_useful_on_digits(digits_net, digits):
    with torch.no_grad():
        assert vra(digits_net(digits[2]), digits[3]) > 0.5


@pytest.fixture(scope="module")
def mnist_net(mnist_dir):
    x, y = read_mnist_split(mnist_dir, "test")
    x = x.float() / 255
    net = train_minmax(x[:8000], y[:8000], "2C2F", eps=0.3, epochs=3, batch_size=256)
    return net, x[8000:8400], y[8000:8400]


def test_no_certified_mnist_digit_is_broken(mnist_net, report):
    net, x, _ = mnist_net
    for bound in ("power", "sound"):
        certified, broken = broken_certificates(net, x, net.margin_bounds(bound), 0.3)
        assert certified >= 0.5 * len(x) and broken == 0
        report(f"Theorem 4, genuine MNIST 2C2F eps 0.3 ({bound} bound): {certified}/{len(x)} certified, 0 broken")


def test_weakened_bound_is_caught_on_mnist(mnist_net):
    net, x, _ = mnist_net
    assert broken_certificates(net, x, net.k_ij() * 0.1, 0.3)[1] > 0


def test_strong_attack_finds_at_least_what_plain_pgd_finds(digits_net, digits, report):
    """The certification stage's attack (APGD-style, CE and margin, restarts) against plain 50-step PGD."""
    from gloro_repro.evaluation import PLAIN_PGD, AttackSettings, attack_fools

    x, y = digits[2], digits[3]
    strong = attack_fools(digits_net.f, x, y, 0.3, AttackSettings(100, 2), seed=0)
    plain = attack_fools(digits_net.f, x, y, 0.3, PLAIN_PGD, seed=0, attack=pgd_l2)
    assert strong.sum() >= plain.sum()
    assert (plain & ~strong).sum() <= 0.01 * len(x)
    report(f"attack on digits eps 0.3: strong (APGD-style) breaks {int(strong.sum())}/{len(x)}, "
           f"plain PGD-50 {int(plain.sum())}; found only by plain: {int((plain & ~strong).sum())}")
