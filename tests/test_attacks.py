"""L2 PGD: stays in the ball and the box, and finds the adversarial example when one exists."""
import pytest
import torch

from gloro_repro.gloro.attacks import pgd_l2, project_l2


def linear_classifier():
    f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        f[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]))
        f[1].bias.copy_(torch.tensor([-0.5, 0.5]))
    return f


@pytest.mark.parametrize("objective", ["ce", "margin"])
def test_pgd_respects_ball_and_box(objective):
    torch.manual_seed(0)
    f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.rand(50, 1, 3, 4)
    adv = pgd_l2(f, x, torch.randint(0, 3, (50,)), eps=0.5, steps=20, restarts=2, objective=objective)
    assert (adv - x).flatten(1).norm(dim=1).max() <= 0.5 * (1 + 1e-5)
    assert adv.min() >= 0 and adv.max() <= 1


@pytest.mark.parametrize("objective", ["ce", "margin"])
def test_pgd_crosses_a_linear_boundary_exactly_when_it_can(objective):
    """f_0 - f_1 = 2 x_0 - 1, so the label flips iff x_0 can be pushed below 0.5."""
    f = linear_classifier()
    x = torch.full((2, 1, 2, 2), 0.5)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.7, 0.9  # 0.2 and 0.4 from the boundary
    adv = pgd_l2(f, x, torch.zeros(2, dtype=torch.long), eps=0.3, steps=30, objective=objective)
    flipped = f(adv).argmax(dim=1) == 1
    assert flipped.tolist() == [True, False]


def test_projection():
    delta = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    assert torch.allclose(project_l2(delta, 1.0), torch.tensor([[0.6, 0.8], [0.3, 0.4]]))


@pytest.mark.parametrize("bad", [dict(eps=0.0), dict(eps=0.1, steps=0), dict(eps=0.1, restarts=0)])
def test_pgd_rejects_bad_settings(bad):
    with pytest.raises(ValueError, match="PGD needs"):
        pgd_l2(linear_classifier(), torch.rand(1, 1, 2, 2), torch.zeros(1, dtype=torch.long), **bad)


def test_unknown_objective():
    with pytest.raises(ValueError, match="unknown attack objective 'dlr'"):
        pgd_l2(linear_classifier(), torch.rand(1, 1, 2, 2), torch.zeros(1, dtype=torch.long), 0.1, objective="dlr")
