"""Batched L2 projected gradient descent (PGD) against a logit network."""
from __future__ import annotations

import math
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
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        radius = eps * torch.rand(len(x), generator=generator, dtype=x.dtype, device=x.device) ** (1 / d)
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


def apgd_checkpoints(steps: int) -> list[int]:
    """AutoPGD's checkpoints: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({int(math.ceil(q * steps)) for q in p if 0 < q < 1})


def apgd_l2(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, labels: torch.Tensor, eps: float,
            steps: int = 100, restarts: int = 1, objective: Objective = "ce",
            generator: torch.Generator | None = None, momentum: float = 0.75, rho: float = 0.75) -> torch.Tensor:
    """L2 attack with AutoPGD's step-size schedule (Croce & Hein, 2020), our implementation.

    Per sample: step size starts at 2 eps and is halved at each checkpoint where fewer than
    ``rho`` of the steps since the last one increased the loss, or where neither the step size
    nor the best loss changed; after halving it restarts from the best point. Steps use
    momentum 0.75. Restarts start at random points of the ball. Returns, per sample, the first
    point found that ``f`` misclassifies, else the highest-loss point.

    Shape:
        ``x [N, ...]`` in [0, 1], ``labels [N]`` -> ``[N, ...]``.
    """
    if eps <= 0 or steps < 1 or restarts < 1:
        raise ValueError(f"APGD needs eps > 0, steps >= 1 and restarts >= 1, got {eps}, {steps}, {restarts}")
    x = x.detach()
    n, view = len(x), (-1, *[1] * (x.dim() - 1))
    project = lambda z: (x + project_l2(z - x, eps)).clamp(0, 1)
    found = x.clone()
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    checkpoints = set(apgd_checkpoints(steps))

    def loss_and_grad(z):
        z = z.clone().requires_grad_(True)
        logits = f(z)
        loss = attack_objective(logits, labels, objective)
        (grad,) = torch.autograd.grad(loss.sum(), z)
        return loss.detach(), grad, logits.argmax(dim=1) != labels

    for _ in range(restarts):
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        radius = eps * torch.rand(n, generator=generator, dtype=x.dtype, device=x.device) ** (1 / x[0].numel())
        current = project(x + direction / _flat_norm(direction) * radius.view(view))
        previous = current.clone()
        loss, grad, wrong = loss_and_grad(current)
        best, best_loss = current.clone(), loss.clone()
        step = torch.full((n,), 2 * eps, dtype=x.dtype, device=x.device)
        increases = torch.zeros(n, device=x.device)
        last_step, last_best, since = step.clone(), best_loss.clone(), 0
        for k in range(1, steps + 1):
            new = wrong & ~fooled
            found[new], fooled = current[new], fooled | wrong
            z = project(current + step.view(view) * grad / _flat_norm(grad).clamp_min(1e-12))
            pull = 1.0 if k == 1 else momentum
            proposal = project(current + pull * (z - current) + (1 - pull) * (current - previous))
            previous, current = current, proposal
            new_loss, grad, wrong = loss_and_grad(current)
            increases += (new_loss > loss).float()
            loss, since = new_loss, since + 1
            better = loss > best_loss
            best[better], best_loss[better] = current[better], loss[better]
            if k in checkpoints:
                stalled = (increases < rho * since) | ((last_step == step) & (last_best == best_loss))
                step = torch.where(stalled, step / 2, step)
                current[stalled] = best[stalled]
                if stalled.any():
                    _, grad_best, _ = loss_and_grad(best)
                    grad[stalled] = grad_best[stalled]
                    loss[stalled] = best_loss[stalled]
                previous[stalled] = current[stalled]
                increases.zero_()
                last_step, last_best, since = step.clone(), best_loss.clone(), 0
        new = wrong & ~fooled
        found[new], fooled = current[new], fooled | wrong
        found[~fooled] = best[~fooled]
        if fooled.all():
            break
    return found
