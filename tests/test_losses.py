"""CE over m+1 logits and TRADES: values, stability, gradients."""
import pytest
import torch
import torch.nn.functional as F

from gloro_repro.gloro.losses import emma_loss, gloro_cross_entropy, trades_loss


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


def test_emma_raises_each_other_logit_by_its_clipped_radius():
    torch.manual_seed(1)
    logits = torch.randn(32, 5, dtype=torch.float64) * 2
    w = torch.randn(5, 7, dtype=torch.float64)
    k_ij = torch.cdist(w, w) * 0.8
    labels, eps = torch.randint(0, 5, (32,)), 0.3
    raised = logits.clone()
    for n in range(32):
        y = int(labels[n])
        for i in range(5):
            if i != y:
                fraction = min(max(float(logits[n, y] - logits[n, i]) / (float(k_ij[y, i]) * eps), 0.01), 1.0)
                raised[n, i] += fraction * eps * k_ij[y, i]
    assert emma_loss(logits, k_ij, labels, eps).item() == pytest.approx(F.cross_entropy(raised, labels).item(),
                                                                        rel=1e-12)


def test_emma_holds_the_radii_constant_and_reaches_k_through_the_raised_logits():
    logits = torch.tensor([[2.0, 1.0, -3.0]], requires_grad=True)
    k_ij = torch.tensor([[0.0, 2.0, 1.0], [2.0, 0.0, 1.5], [1.0, 1.5, 0.0]], requires_grad=True)
    emma_loss(logits, k_ij, torch.tensor([0]), 1.0).backward()
    # class 1: margin 1 -> radius 0.5 (held constant); class 2: margin 5 -> clipped to 1
    p = torch.softmax(torch.tensor([2.0, 1.0 + 0.5 * 2.0, -3.0 + 1.0]), dim=0)
    assert logits.grad[0].tolist() == pytest.approx((p - torch.tensor([1.0, 0, 0])).tolist(), abs=1e-6)
    assert k_ij.grad[0, 1].item() == pytest.approx(0.5 * p[1].item(), abs=1e-6)


def test_a_loss_defined_here_trains_from_params_alone(digits):
    """The registry: one function here makes a loss the config, the training loop and the tables accept."""
    from conftest import tiny_params

    from gloro_repro.config import parse_params
    from gloro_repro.gloro import LOSSES, EpsSchedule, GloroNet, LRSchedule, build_network, register_loss
    from gloro_repro.gloro.fit import fit
    from gloro_repro.tables import model_label

    @register_loss("bottom_margin", "BM", uses_lambda=True)
    def bottom_margin(batch, lam):  # CE on f plus lam times the bottom logit's lead over the true one
        true = batch.gloro.gather(1, batch.labels[:, None])[:, 0]
        return F.cross_entropy(batch.logits, batch.labels) + lam * F.relu(batch.gloro[:, -1] - true).mean()

    try:
        params = tiny_params()
        params["experiments"]["tiny"]["training"] |= {"loss": "bottom_margin", "lam": 0.5}
        params["experiments"]["tiny"]["model"]["activation"] = "relu"
        experiment = parse_params(params).experiment("tiny")
        assert model_label(experiment) == "ReLU GloRo (BM)"
        x, y = digits[0][:256], digits[1][:256]
        schedule = experiment.schedule()
        schedule = type(schedule)(0, EpsSchedule.parse("single", 0.3, 2), schedule.lam, LRSchedule.parse(None, 1e-3, 2))
        net = fit(GloroNet(build_network("digits", (1, 8, 8), 10, seed=0), 0.3), x, y, schedule, 64,
                  loss="bottom_margin")
        assert net.layers[0].is_converged()
    finally:
        del LOSSES["bottom_margin"]
