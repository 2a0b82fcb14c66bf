"""GloRo training losses over the m+1 logits, cross-entropy and TRADES (Definition 3), and the
loss of one training step, which every training loop here calls (``step_loss``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import GloroNet


def gloro_cross_entropy(gloro: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the m+1 GloRo logits against the true label (bottom is never a label)."""
    return F.cross_entropy(gloro, labels)


def trades_loss(gloro: torch.Tensor, labels: torch.Tensor, lam: float) -> torch.Tensor:
    """``CE(f(x), y) + lam * KL(softmax(f) || softmax([f, y_bot]))``, averaged over the batch.

    With p = softmax(f) extended by a zero for bottom, the KL divergence simplifies exactly to
    ``log(1 + exp(y_bot - logsumexp(f))) = softplus(y_bot - logsumexp(f))``, which is stable for
    any logit scale.
    """
    logits, y_bot = gloro[:, :-1], gloro[:, -1]
    kl = F.softplus(y_bot - torch.logsumexp(logits, dim=1))
    return F.cross_entropy(logits, labels) + lam * kl.mean()


@dataclass(frozen=True)
class StepLoss:
    """One training step's loss, with f's logits and (robust steps) the m+1 GloRo logits, detached."""

    loss: torch.Tensor
    logits: torch.Tensor
    gloro: torch.Tensor | None


def step_loss(net: GloroNet, x: torch.Tensor, y: torch.Tensor, eps: float | None, lam: float = 0.0,
              trades: bool = True) -> StepLoss:
    """The loss of one training step: plain cross-entropy on f when ``eps`` is None (warm-up epochs,
    Standard models), else the GloRo net at radius ``eps`` (in training mode: ``power_iterations``
    iterations first) with TRADES(``lam``), or cross-entropy over the m+1 logits when not ``trades``."""
    if eps is None:
        logits = net.f(x)
        return StepLoss(F.cross_entropy(logits, y), logits.detach(), None)
    gloro = net(x, eps=eps)
    loss = trades_loss(gloro, y, lam) if trades else gloro_cross_entropy(gloro, y)
    gloro = gloro.detach()
    return StepLoss(loss, gloro[:, :-1], gloro)
