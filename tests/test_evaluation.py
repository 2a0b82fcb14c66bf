"""The certification stage's checks: pair counts for Lemma 1 / Theorem 2, failures, radius curves."""
import pytest
import torch

from gloro_repro.evaluation import THEOREM_CHECKS, pair_violations, radius_curve, theorem_failures
from gloro_repro.gloro.model import Certificate


def test_pair_violations_count_close_certified_pairs_with_different_predictions():
    x = torch.tensor([[0.0, 0.0], [0.5, 0.0], [3.0, 0.0], [3.4, 0.0], [10.0, 0.0]])[:, None]
    prediction = torch.tensor([0, 1, 2, 2, 3])
    certified = torch.tensor([True, True, True, True, False])
    assert pair_violations(x, prediction, certified, distance=1.0) == (2, 1)  # (0,1) differ, (2,3) agree
    assert pair_violations(x, prediction, certified, distance=0.45) == (1, 0)
    assert pair_violations(x, prediction, torch.zeros(5, dtype=torch.bool), distance=100.0) == (0, 0)
    many = torch.rand(3000, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (3000,), generator=torch.Generator().manual_seed(1))
    close, differ = pair_violations(many, labels, torch.ones(3000, dtype=torch.bool), 0.8, block=512)
    d = torch.cdist(many.flatten(1).double(), many.flatten(1).double())
    upper = torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)
    assert close == int(((d <= 0.8) & upper).sum())
    assert differ == int(((d <= 0.8) & upper & (labels[:, None] != labels[None])).sum())


def test_theorem_failures_and_radius_curve():
    metrics = {key: 0 for key in THEOREM_CHECKS}
    assert theorem_failures(metrics) == {}
    assert theorem_failures(metrics | {"lemma1_violations": 2}) == {"lemma1_violations": 2}
    cert = Certificate(prediction=torch.tensor([0, 1, 1]), certified=torch.tensor([True, True, False]),
                       radius=torch.tensor([0.5, 0.2, 0.0]))
    curve = radius_curve(cert, torch.tensor([0, 0, 1]), torch.tensor([0.0, 0.3, 0.6]))
    assert curve == pytest.approx([2 / 3, 1 / 3, 0.0])


def test_an_attack_searching_another_network_is_judged_by_the_attacked_one():
    """``attack_fools`` follows ``search``'s gradients, but only f's own labels count as fooled."""
    from gloro_repro.evaluation import AttackSettings, attack_fools

    torch.manual_seed(0)
    x, labels = torch.rand(20, 1, 4, 4), torch.zeros(20, dtype=torch.long)
    weak = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))  # easily pushed to class 1
    with torch.no_grad():
        weak[1].weight.copy_(torch.stack([torch.zeros(16), torch.ones(16)]))
        weak[1].bias.copy_(torch.tensor([8.0, 0.0]))
    constant = lambda z: torch.tensor([1.0, 0.0]).expand(len(z), 2) + 0 * z.flatten(1)[:, :2]  # always class 0
    settings = AttackSettings(steps=20, restarts=1)
    assert attack_fools(weak, x, labels, 2.0, settings, seed=0).sum() > 0
    assert attack_fools(constant, x, labels, 2.0, settings, seed=0, search=weak).sum() == 0
    assert attack_fools(weak, x, labels, 2.0, settings, seed=0, search=weak).equal(
        attack_fools(weak, x, labels, 2.0, settings, seed=0))
