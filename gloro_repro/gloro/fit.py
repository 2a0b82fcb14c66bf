"""A minimal plain-PyTorch GloRo training loop, for users without Lightning and for tests.

The project's pipeline trains through Lightning (``gloro_repro/lit``); both call the same
``losses.step_loss``, so this loop differs only in what Lightning adds (devices, checkpoints, logs).
"""
from __future__ import annotations

import torch

from .losses import step_loss
from .model import GloroNet
from .schedules import TrainingSchedule


def fit(net: GloroNet, x: torch.Tensor, y: torch.Tensor, schedule: TrainingSchedule, batch_size: int,
        loss: str = "trades", seed: int = 0, tol: float = 1e-5) -> GloroNet:
    """Train ``net`` on in-memory ``x``, ``y`` following ``schedule``; converge power iteration at the end.

    Warm-up epochs use plain cross-entropy on f; robust epochs the registered ``loss`` (``losses.LOSSES``)
    with lambda_t, at eps_t with learning rate lr_t.
    """
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=schedule.lr.init_lr, eps=1e-7)
    for epoch in range(schedule.total_epochs):
        settings = schedule.at(epoch)
        for group in optimiser.param_groups:
            group["lr"] = settings.lr
        net.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            eps = settings.eps if settings.robust else None
            value = step_loss(net, x[batch], y[batch], eps, settings.lam, loss).loss
            optimiser.zero_grad()
            value.backward()
            optimiser.step()
    net.eval()
    net.converge(tol)
    return net
