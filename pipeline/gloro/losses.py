"""GloRo training losses over the m+1 logits: cross-entropy and TRADES (Definition 3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
