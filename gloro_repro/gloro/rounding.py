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

from .activations import propagate_bound
from .chain import network_chain
from .layers import LipschitzLinear
from .precision import require_ieee

UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.float64: 2.0 ** -53}
SLACK = 1 + 1e-9  # the bound's own float64 arithmetic, rounded up


def _gamma(n: int, u: float) -> float:
    if n * u >= 1:
        raise ValueError(f"dot products of length {n} are too long for a rounding bound at u={u}")
    return n * u / (1 - n * u)


@torch.no_grad()
def logit_rounding_bound(f: nn.Module, x: torch.Tensor | None = None, input_shape: tuple[int, ...] | None = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-logit bound r on ``|computed f(x) - exact f(x)|``.

    With a batch ``x``: per input, for f run in ``x.dtype`` (as it is), from the magnitudes the
    forward pass actually computes (tight). Without: one bound valid for every input in
    [0, 1]^``input_shape`` when f runs in ``dtype`` (interval magnitudes; loose in float32,
    negligible in float64), computed on the CPU whatever f's device. Tracked layers bring ``abs_map``,
    the other modules ``propagate_bound`` (``activations.py``).

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
    magnitude = torch.ones((1, *input_shape), dtype=torch.float64) if x is None else x.double().abs()
    error = torch.zeros_like(magnitude)  # bounds |computed - exact|
    for module in network_chain(f):
        if isinstance(module, LipschitzLinear):
            local = _gamma(module.terms_per_output + 1, u) * module.abs_map(magnitude, bias=True)
            error = (module.abs_map(error) + local) * SLACK
            if value is None:
                magnitude = (module.abs_map(magnitude, bias=True) + error) * SLACK
        else:
            error = propagate_bound(module, error)
            magnitude = propagate_bound(module, magnitude) if value is None else magnitude
        if value is not None:
            value = module(value)
            magnitude = value.double().abs()
    return error if x is not None else error[0]
