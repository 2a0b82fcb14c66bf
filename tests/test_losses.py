"""CE over m+1 logits and TRADES: values, stability, gradients."""
import pytest
import torch
import torch.nn.functional as F

from gloro_repro.gloro.losses import gloro_cross_entropy, trades_loss


def test_trades_kl_term_equals_the_explicit_kl():
    torch.manual_seed(0)
    gloro = torch.randn(64, 11, dtype=torch.float64) * 3
    labels = torch.randint(0, 10, (64,))
    p = F.softmax(gloro[:, :10], dim=1)
    log_q = F.log_softmax(gloro, dim=1)[:, :10]
    kl = (p * (p.log() - log_q)).sum(dim=1).mean()
    expected = F.cross_entropy(gloro[:, :10], labels) + 2.5 * kl
    assert trades_loss(gloro, labels, 2.5).item() == pytest.approx(expected.item(), rel=1e-10)


def test_trades_with_zero_lambda_is_clean_cross_entropy():
    gloro, labels = torch.randn(8, 4), torch.randint(0, 3, (8,))
    assert trades_loss(gloro, labels, 0.0).item() == pytest.approx(F.cross_entropy(gloro[:, :3], labels).item())


@pytest.mark.parametrize("scale", [1e3, 1e5])
def test_losses_are_finite_for_huge_logits(scale):
    gloro = (torch.randn(16, 6) * scale).requires_grad_(True)
    labels = torch.randint(0, 5, (16,))
    for loss in (trades_loss(gloro, labels, 3.0), gloro_cross_entropy(gloro, labels)):
        (grad,) = torch.autograd.grad(loss, gloro)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_cross_entropy_never_rewards_bottom():
    """Raising the bottom logit always raises the CE loss (bottom is never the label)."""
    gloro = torch.zeros(1, 4, requires_grad=True)
    gloro_cross_entropy(gloro, torch.tensor([1])).backward()
    assert gloro.grad[0, -1] > 0
