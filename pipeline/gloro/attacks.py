"""Batched L2 projected gradient descent (PGD) against a logit network."""
from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F

Objective = Literal["ce", "margin"]


def _flat_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped to broadcast against ``v``."""
    return torch.linalg.vector_norm(v.flatten(1), dim=1).view(-1, *[1] * (v.dim() - 1))


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Project each sample of ``delta`` onto the L2 ball of radius ``eps``."""
    return delta * (eps / _flat_norm(delta).clamp_min(1e-12)).clamp(max=1.0)


def attack_objective(logits: torch.Tensor, labels: torch.Tensor, objective: Objective) -> torch.Tensor:
    """Per-sample loss to maximise: cross-entropy, or the CW margin ``max_{i != y} f_i - f_y``."""
    if objective == "ce":
        return F.cross_entropy(logits, labels, reduction="none")
    if objective == "margin":
        true = logits.gather(1, labels[:, None])[:, 0]
        others = logits.scatter(1, labels[:, None], float("-inf"))
        return others.amax(dim=1) - true
    raise ValueError(f"unknown attack objective {objective!r}; expected 'ce' or 'margin'")


def pgd_l2(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, labels: torch.Tensor, eps: float,
           steps: int = 50, step_size: float | None = None, restarts: int = 1,
           objective: Objective = "ce", generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted L2 PGD within ``||x' - x|| <= eps``, clipped to [0, 1].

    Each restart starts at a uniformly random point of the ball and takes ``steps`` normalised
    gradient steps of ``step_size`` (default ``2.5 * eps / steps``). Returns, per sample, the
    first point found that ``f`` misclassifies, else the last iterate of the last restart.

    Shape:
        ``x [N, ...]`` in [0, 1], ``labels [N]`` -> ``[N, ...]``.
    """
    if eps <= 0 or steps < 1 or restarts < 1:
        raise ValueError(f"PGD needs eps > 0, steps >= 1 and restarts >= 1, got {eps}, {steps}, {restarts}")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    x = x.detach()
    best = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    d = x[0].numel()
    for _ in range(restarts):
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        radius = eps * torch.rand(len(x), generator=generator, dtype=x.dtype).to(x.device) ** (1 / d)
        delta = direction / _flat_norm(direction) * radius.view(-1, *[1] * (x.dim() - 1))
        adv = (x + delta).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = attack_objective(f(adv), labels, objective).sum()
            (grad,) = torch.autograd.grad(loss, adv)
            with torch.no_grad():
                adv = adv + step_size * grad / _flat_norm(grad).clamp_min(1e-12)
                adv = (x + project_l2(adv - x, eps)).clamp(0, 1)
        with torch.no_grad():
            new = (f(adv).argmax(dim=1) != labels) & ~fooled
            best[new] = adv[new]
            fooled |= new
            if fooled.all():
                break
            best[~fooled] = adv[~fooled]
    return best
