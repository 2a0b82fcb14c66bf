"""Spectral norms of tracked layers: exact (small layers, for tests) and provable upper bounds.

Power iteration approaches a layer's norm from below, so its converged value is an estimate.
``sound_spectral_norm`` gives a provable upper bound instead:

* dense: the exact largest singular value (SVD in float64);
* conv (SAME zero padding, any stride): the layer is rewritten as a stride-1 convolution of
  the polyphase (space-to-depth) decomposition of the zero-padded input. That map is a
  restriction of a circular convolution on a grid large enough that no kept output wraps,
  composed with an isometric embedding, so its norm is at most the circular convolution's,
  which is exactly the largest singular value of the kernel's DFT over all frequencies.

All are computed in float64 and then widened by ``SOUND_RTOL`` to cover that arithmetic.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .layers import LipschitzConv2d, LipschitzDense, LipschitzLinear

SOUND_RTOL = 1e-6


def operator_matrix(layer: LipschitzLinear) -> torch.Tensor:
    """The layer's linear map (bias excluded) as a dense float64 matrix ``[out_dim, in_dim]``.

    Materialises every column, so use it only on small layers.
    """
    in_dim = math.prod(layer.input_shape)
    basis = torch.eye(in_dim, dtype=torch.float64).reshape(in_dim, *layer.input_shape)
    with torch.no_grad():
        columns = layer.linear_map(basis, layer.weight.detach().double())
    return columns.reshape(in_dim, -1).T


def exact_spectral_norm(layer: LipschitzLinear) -> float:
    """The exact spectral norm of the layer's linear map, via SVD of the materialised operator."""
    return torch.linalg.matrix_norm(operator_matrix(layer), ord=2).item()


def _circular_conv_norm(weight: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Exact norm of the stride-1 circular convolution with ``weight`` on an ``grid`` torus."""
    spectrum = torch.fft.fft2(weight, s=grid)  # [C_out, C_in, gh, gw]
    per_frequency = spectrum.permute(2, 3, 0, 1)  # [gh, gw, C_out, C_in]
    return torch.linalg.matrix_norm(per_frequency, ord=2).max()


def polyphase_kernel(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """Kernel of the stride-1 conv equivalent to ``weight`` at ``stride`` on polyphase input.

    Shape:
        ``[C_out, C_in, k, k]`` -> ``[C_out, C_in*stride*stride, ceil(k/stride), ceil(k/stride)]``.
    """
    c_out, c_in, k, _ = weight.shape
    kq = -(-k // stride)
    padded = F.pad(weight, (0, kq * stride - k, 0, kq * stride - k))
    # kernel index a = p*stride + r  ->  channel (c_in, r_h, r_w), spatial (p_h, p_w)
    blocks = padded.reshape(c_out, c_in, kq, stride, kq, stride)
    return blocks.permute(0, 1, 3, 5, 2, 4).reshape(c_out, c_in * stride * stride, kq, kq)


def conv_norm_upper_bound(layer: LipschitzConv2d) -> float:
    """Provable upper bound on the norm of a zero-padded, strided conv (see module docstring)."""
    s = layer.stride
    kernel = polyphase_kernel(layer.weight.detach().double(), s)
    left, right, top, bottom = layer.padding
    _, h, w = layer.input_shape
    kq = kernel.shape[-1]
    grid = (max(-(-(h + top + bottom) // s), kq), max(-(-(w + left + right) // s), kq))
    return _circular_conv_norm(kernel, grid).item()


def sound_spectral_norm(layer: LipschitzLinear) -> float:
    """A provable upper bound on the layer's spectral norm (widened by ``SOUND_RTOL``)."""
    if isinstance(layer, LipschitzDense):
        norm = torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2).item()
    elif isinstance(layer, LipschitzConv2d):
        norm = conv_norm_upper_bound(layer)
    else:
        raise TypeError(f"no sound spectral-norm bound for layer type {type(layer).__name__}")
    return norm * (1 + SOUND_RTOL)
