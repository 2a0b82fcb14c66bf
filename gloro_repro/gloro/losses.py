"""GloRo training losses as a registry, and the loss of one training step, which every training
loop here calls (``step_loss``).

A robust loss is one function of a ``RobustBatch`` (f's logits, the margin bounds K, the m+1 GloRo
logits, labels, eps) and the epoch's lambda, registered under a name with ``register_loss``;
``training.loss`` in params.yaml names it, and ``training.lam`` gives its lambda schedule when it
has one. Registered here: ``ce`` (cross-entropy over the m+1 logits), ``trades`` (Definition 3)
and ``emma`` (Hu et al., 2023, used by LiResNet).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .model import GloroNet, gloro_logits

EMMA_RADIUS_RANGE = (0.01, 1.0)  # EMMA's per-class radius, as a fraction of eps


@dataclass(frozen=True)
class RobustBatch:
    """What a robust loss sees: f's logits ``[N, m]``, the margin bounds ``k_ij [m, m]`` (with their
    gradient), the m+1 GloRo logits at ``eps``, and the labels."""

    logits: torch.Tensor
    k_ij: torch.Tensor
    gloro: torch.Tensor
    labels: torch.Tensor
    eps: float | torch.Tensor


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: the function, its label in the tables, and whether it takes a lambda schedule."""

    fn: Callable[[RobustBatch, float | torch.Tensor], torch.Tensor]
    label: str
    uses_lambda: bool


LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, label: str | None = None, uses_lambda: bool = False):
    """Register ``fn(batch: RobustBatch, lam) -> scalar loss`` as ``name`` (usable in params.yaml)."""
    def register(fn):
        if name in LOSSES:
            raise ValueError(f"a loss named {name!r} is already registered")
        LOSSES[name] = LossSpec(fn, label or name.upper(), uses_lambda)
        return fn
    return register


def loss_spec(name: str) -> LossSpec:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}") from None


def gloro_cross_entropy(gloro: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the m+1 GloRo logits against the true label (bottom is never a label)."""
    return F.cross_entropy(gloro, labels)


def trades_loss(gloro: torch.Tensor, labels: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """``CE(f(x), y) + lam * KL(softmax(f) || softmax([f, y_bot]))``, averaged over the batch.

    With p = softmax(f) extended by a zero for bottom, the KL divergence simplifies exactly to
    ``log(1 + exp(y_bot - logsumexp(f))) = softplus(y_bot - logsumexp(f))``, which is stable for
    any logit scale.
    """
    logits, y_bot = gloro[:, :-1], gloro[:, -1]
    kl = F.softplus(y_bot - torch.logsumexp(logits, dim=1))
    return F.cross_entropy(logits, labels) + lam * kl.mean()


def emma_loss(logits: torch.Tensor, k_ij: torch.Tensor, labels: torch.Tensor,
              eps: float | torch.Tensor) -> torch.Tensor:
    """EMMA: each other class i's logit raised by ``eps_i K_yi``, with the per-class radius
    ``eps_i = clip((f_y - f_i) / (K_yi eps), 0.01, 1) eps`` held constant (detached), then
    cross-entropy. Classes already far from y are pushed with less than the full eps."""
    k = k_ij[labels]  # [N, m], K_yi; zero at i = y, so the true logit is not raised
    margins = logits.gather(1, labels[:, None]) - logits
    scale = (k * eps).clamp_min(torch.finfo(logits.dtype).tiny)
    radius = (margins / scale).clamp(*EMMA_RADIUS_RANGE).detach() * eps
    return F.cross_entropy(logits + radius * k, labels)


register_loss("ce", "CE")(lambda batch, lam: gloro_cross_entropy(batch.gloro, batch.labels))
register_loss("trades", "T", uses_lambda=True)(lambda batch, lam: trades_loss(batch.gloro, batch.labels, lam))
register_loss("emma", "EMMA")(lambda batch, lam: emma_loss(batch.logits, batch.k_ij, batch.labels, batch.eps))


@dataclass(frozen=True)
class StepLoss:
    """One training step's loss, with f's logits and (robust steps) the m+1 GloRo logits, detached."""

    loss: torch.Tensor
    logits: torch.Tensor
    gloro: torch.Tensor | None


def step_loss(net: GloroNet, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor | None,
              lam: float | torch.Tensor = 0.0, loss: str = "trades") -> StepLoss:
    """The loss of one training step: plain cross-entropy on f when ``eps`` is None (warm-up epochs,
    Standard models), else the registered robust ``loss`` at radius ``eps`` (in training mode:
    ``power_iterations`` iterations first) with lambda ``lam``."""
    if eps is None:
        logits = net.f(x)
        return StepLoss(F.cross_entropy(logits, y), logits.detach(), None)
    fn = loss_spec(loss).fn
    logits, k_ij = net.logits_and_bounds(x)
    gloro = gloro_logits(logits, k_ij, eps)
    value = fn(RobustBatch(logits, k_ij, gloro, y, eps), lam)
    return StepLoss(value, logits.detach(), gloro.detach())
