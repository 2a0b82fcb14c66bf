"""Interleaved timing: a workload and its baseline alternate in one loop, so drift hits both alike.

Every figure is the median over repeats of the per-repeat ratio (workload time / baseline time),
so a noisy machine shifts both sides of each ratio together.
"""
from __future__ import annotations

import math
import statistics
from typing import Callable

import torch

from gloro_repro import measure


def timed(work: Callable[[], object], device: torch.device, calls: int = 1) -> float:
    """Seconds per call of ``work``, averaged over ``calls`` calls, queued GPU work included."""
    return measure.timed(lambda: [work() for _ in range(calls)], device)[1] / calls


def interleaved(workloads: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                warmup: int = 1, min_sample_s: float = 0.2) -> dict[str, list[float]]:
    """Seconds per call of each workload, ``repeats`` samples each, alternating the order every repeat.

    A sample averages as many calls as fill ``min_sample_s`` (judged from the warm-up call), so
    millisecond workloads are not lost in timer and scheduler noise.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    items = list(workloads.items())
    calls = dict.fromkeys(workloads, 1)
    for _ in range(warmup):
        for name, work in items:
            calls[name] = min(max(1, math.ceil(min_sample_s / max(timed(work, device), 1e-9))), 10_000)
    times: dict[str, list[float]] = {name: [] for name in workloads}
    for r in range(repeats):
        for name, work in items if r % 2 == 0 else items[::-1]:
            times[name].append(timed(work, device, calls[name]))
    return times


def median_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over repeats of ``numerator / denominator`` (paired repeat by repeat)."""
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator]))


def median_ms(times: dict[str, list[float]], name: str) -> float:
    return 1e3 * statistics.median(times[name])
