"""Appendix F: lower bounds on the margin Lipschitz constant, found by gradient ascent.

The ratio ``|m(x1) - m(x2)| / ||x1 - x2||`` with ``m = f_j - f_i`` is maximised with Adam over
many starting pairs at once (one batch). Every value reported is attained by a concrete pair,
re-evaluated in float64, so it is a true lower bound on the margin Lipschitz constant.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .attacks import project_l2


@dataclass(frozen=True)
class LowerBound:
    """The bound (maximum for global, mean for local) and the best ratio found per pair/centre."""

    value: float
    per_start: torch.Tensor  # [P] float64


def margin_ratios(f: Callable[[torch.Tensor], torch.Tensor], x1: torch.Tensor, x2: torch.Tensor,
                  j: torch.Tensor | None = None) -> torch.Tensor:
    """Per pair, ``max_{i != j} |m_i(x1) - m_i(x2)| / ||x1 - x2||`` with ``m_i = f_j - f_i``; ``j``
    defaults to the class f gives x1. Both points go through f in one batch. Shape ``[P]``."""
    y1, y2 = f(torch.cat([x1, x2])).split(len(x1))
    if j is None:
        j = y1.detach().argmax(dim=1)
    m1 = y1.gather(1, j[:, None]) - y1
    m2 = y2.gather(1, j[:, None]) - y2
    dist = torch.linalg.vector_norm((x1 - x2).flatten(1), dim=1).clamp_min(1e-12)
    return ((m1 - m2).abs().amax(dim=1)) / dist  # i = j contributes 0


def _optimise(f: nn.Module, x1: torch.Tensor, x2: torch.Tensor, steps: int, lr: float, j: torch.Tensor | None,
              project: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Adam ascent on the summed ratio (``j`` as in ``margin_ratios``); returns the best ratio per
    pair, re-checked in float64 (with the label float32 f gives there, when ``j`` is None)."""
    x1, x2 = project(x1.clone()).requires_grad_(True), project(x2.clone()).requires_grad_(True)
    optimiser = torch.optim.Adam([x1, x2], lr=lr, eps=1e-7)
    best = torch.full((len(x1),), -1.0, device=x1.device)
    best1, best2 = x1.detach().clone(), x2.detach().clone()
    per_pair = (-1,) + (1,) * (x1.dim() - 1)  # a pair's flag against its points' shape
    for step in range(steps + 1):
        ratio = margin_ratios(f, x1, x2, j)
        with torch.no_grad():
            improved = ratio > best
            best = torch.where(improved, ratio, best)
            best1 = torch.where(improved.view(per_pair), x1, best1)
            best2 = torch.where(improved.view(per_pair), x2, best2)
        if step == steps:
            break
        optimiser.zero_grad()
        (-ratio.sum()).backward(inputs=[x1, x2])  # no gradients for the weights: a third of the cost
        optimiser.step()
        with torch.no_grad():
            x1.copy_(project(x1))
            x2.copy_(project(x2))
    with torch.no_grad():
        labels = f(best1).argmax(dim=1) if j is None else j
        return margin_ratios(copy.deepcopy(f).double(), best1.double(), best2.double(), labels)


def _draw(pool: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    return pool[torch.randint(len(pool), (n,), generator=generator, device=pool.device)]


def global_lower_bound(f: nn.Module, pool: torch.Tensor, pairs: int = 100, steps: int = 7_500,
                       lr: float = 1e-3, generator: torch.Generator | None = None) -> LowerBound:
    """Maximum over ``pairs`` optimised pairs, started at random points of ``pool``, with j = F(x1).

    ``f`` is used as given (put it in eval mode first if it has dropout or batch norm).
    """
    x1, x2 = _draw(pool, pairs, generator), _draw(pool, pairs, generator)
    ratios = _optimise(f, x1, x2, steps, lr, None, lambda x: x)
    return LowerBound(ratios.max().item(), ratios.cpu())


def local_lower_bound(f: nn.Module, pool: torch.Tensor, eps: float, centres: int = 100, steps: int = 5_000,
                      lr: float = 1e-3, generator: torch.Generator | None = None) -> LowerBound:
    """Mean over ``centres`` random points x0 of the best ratio with x1, x2 kept in the eps-ball
    around x0 (projected after every step) and j = F(x0). ``f`` is used as given."""
    x0 = _draw(pool, centres, generator)
    with torch.no_grad():
        j0 = f(x0).argmax(dim=1)
    x1, x2 = _draw(pool, centres, generator), _draw(pool, centres, generator)
    ratios = _optimise(f, x1, x2, steps, lr, j0, lambda x: x0 + project_l2(x - x0, eps))
    return LowerBound(ratios.mean().item(), ratios.cpu())
