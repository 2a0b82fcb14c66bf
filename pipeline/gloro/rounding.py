"""A bound on the floating-point error of the logits, so the margin test holds for the exact f.

The certificate compares computed logits: ``f_j - f_i > eps * K_ij``. Rounding in the forward
pass can make a computed margin exceed the exact one. For a dot product of length n computed
in any order (with or without FMA), the classic bound is ``|fl(w.x + b) - (w.x + b)| <=
gamma_{n+1} (|w|.|x| + |b|)`` with ``gamma_k = k u / (1 - k u)`` and u the unit roundoff. Carried
through the layers with the input error ``|W| e``, activations that are exact and 1-Lipschitz
per coordinate (ReLU; MinMax passes on the larger error of each pair), and a worst-case input
magnitude of 1 (inputs in [0, 1]), this gives a per-logit error bound r valid for every input.
The implemented test is then ``f_j - f_i - eps * K_ij > r_i + r_j``, evaluated in float64.

The bound assumes IEEE dot products in the working precision: no TF32 (or oneDNN's reduced
float32 modes) and, on CUDA, no cuDNN (FFT and Winograd convolutions). The per-input bound
refuses to run otherwise; ``precision.ieee_arithmetic()`` provides both.
"""
from __future__ import annotations

import torch
from torch import nn

from .activations import MinMax
from .layers import LipschitzConv2d, LipschitzDense
from .precision import require_ieee

UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.float64: 2.0 ** -53}
SLACK = 1 + 1e-9  # the bound's own float64 arithmetic, rounded up


def _gamma(n: int, u: float) -> float:
    if n * u >= 1:
        raise ValueError(f"dot products of length {n} are too long for a rounding bound at u={u}")
    return n * u / (1 - n * u)


def _abs_layer(layer: nn.Module, v: torch.Tensor) -> torch.Tensor:
    """``|W| v`` (no bias) for a tracked layer, in float64."""
    return layer.linear_map(v, layer.weight.detach().double().abs())


@torch.no_grad()
def logit_rounding_bound(f: nn.Sequential, x: torch.Tensor | None = None, input_shape: tuple[int, ...] | None = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-logit bound r on ``|computed f(x) - exact f(x)|``.

    With a batch ``x``: per input, for f run in ``x.dtype`` (as it is), from the magnitudes the
    forward pass actually computes (tight). Without: one bound valid for every input in
    [0, 1]^``input_shape`` when f runs in ``dtype`` (interval magnitudes; loose in float32,
    negligible in float64).

    Shape:
        ``x [N, ...]`` -> ``[N, m]``; ``input_shape`` -> ``[m]``; float64.
    """
    dtype = dtype if x is None else x.dtype
    if dtype not in UNIT_ROUNDOFF:
        raise ValueError(f"no rounding model for {dtype}; expected float32 or float64")
    if x is not None:  # the bound is of the pass run here, so that pass must be IEEE
        require_ieee(x.device, dtype, "the provable certificate's rounding bound")
    u = UNIT_ROUNDOFF[dtype]
    value = x  # the computed activations, per input
    magnitude = torch.ones((1, *input_shape), dtype=torch.float64) if x is None else value.double().abs()
    error = torch.zeros_like(magnitude)  # bounds |computed - exact|
    for module in f:
        if isinstance(module, (LipschitzConv2d, LipschitzDense)):
            bias = module.bias.detach().double().abs().view(1, -1, *[1] * (magnitude.dim() - 2))
            local = _gamma(module.weight[0].numel() + 1, u) * (_abs_layer(module, magnitude) + bias)
            error = (_abs_layer(module, error) + local) * SLACK
            if value is None:
                magnitude = (_abs_layer(module, magnitude) + bias + error) * SLACK
        elif isinstance(module, MinMax):
            pair = lambda t: torch.maximum(*t.chunk(2, dim=1)).repeat(1, 2, *[1] * (t.dim() - 2))
            error = pair(error)
            magnitude = pair(magnitude) if value is None else magnitude
        elif isinstance(module, nn.Flatten):
            error, magnitude = error.flatten(1), magnitude.flatten(1)
        elif not isinstance(module, nn.ReLU):  # ReLU: |relu(a) - relu(b)| <= |a - b|, |relu(a)| <= |a|
            raise ValueError(f"no rounding model for {type(module).__name__}")
        if value is not None:
            value = module(value)
            magnitude = value.double().abs()
    return error if x is not None else error[0]


def certified_with_rounding(logits: torch.Tensor, k_ij: torch.Tensor, eps: float,
                            rounding: torch.Tensor) -> torch.Tensor:
    """The margin test made robust to rounding: ``f_j - f_i - eps K_ij > r_i + r_j`` for all i != j.

    Evaluated in float64 (differences of float32 values are exact there).

    Shape:
        ``logits [N, m]``, ``k_ij [m, m]``, ``rounding [m]`` or ``[N, m]`` -> ``[N]`` bool.
    """
    logits, k_ij = logits.double(), k_ij.double()
    rounding = rounding.double().expand_as(logits)
    j = logits.argmax(dim=1)
    slack = logits - logits.gather(1, j[:, None]) + eps * k_ij[j] + rounding + rounding.gather(1, j[:, None])
    slack = slack.scatter(1, j[:, None], float("-inf"))
    return slack.amax(dim=1) < 0
