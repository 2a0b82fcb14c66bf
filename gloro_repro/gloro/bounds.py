"""Spectral norms of tracked layers: exact (small layers, for tests) and provable upper bounds.

Power iteration approaches a layer's norm from below, so its converged value is an estimate.
Each tracked layer's ``sound_bound()`` gives a provable upper bound instead, built from the
methods here (which need only the layer's ``linear_map`` and shapes):

* **near-exact** (dense layers, and convs whose operator has at most ``EXACT_MAX_SIDE`` on its
  smaller side and ``EXACT_MAX_ENTRIES`` entries): the operator materialised in float64 (exactly:
  each entry is one weight, see ``operator_matrix``), its Gram matrix on the smaller side, and a
  rigorous bound on the largest eigenvalue of that Gram matrix, ``rigorous_sigma_max``. It is
  within about 1e-11 of the exact norm, so always below the circular bound (widened by 1e-6);
* **circular** (larger convs; SAME zero padding, any stride): the layer is rewritten as a stride-1
  convolution of the polyphase (space-to-depth) decomposition of the zero-padded input. That map
  is a restriction of a circular convolution on any grid large enough that no kept output wraps,
  composed with an isometric embedding, so its norm is at most the circular convolution's, which
  is exactly the largest singular value of the kernel's DFT over the grid's frequencies. Every
  such grid gives a bound; the smallest over ``CIRCULAR_GRIDS`` grids is kept. Computed in float64
  and widened by ``SOUND_RTOL`` (1e-6, above the float64 FFT and SVD errors by a factor of 1e8).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SOUND_RTOL = 1e-6
EXACT_MAX_SIDE = 2048  # the Gram matrix's side: the near-exact bound costs about 13 side^3 flops
EXACT_MAX_ENTRIES = 2 ** 26  # the materialised conv operator: 512 MiB in float64
CIRCULAR_GRIDS = 4  # grid sizes tried for the circular bound, from the smallest valid one up
UNIT_ROUNDOFF = 2.0 ** -53  # float64
ROUND_UP = 1 + 2.0 ** -48  # covers the rounding of a few float64 operations on nonnegative values


@dataclass(frozen=True)
class SoundBound:
    """A provable upper bound on a layer's spectral norm and the method that gave it."""

    value: float
    method: str  # "near-exact" or "circular"


def operator_matrix(layer) -> torch.Tensor:
    """A tracked layer's linear map (bias excluded) as a dense float64 matrix ``[out_dim, in_dim]``,
    on the CPU (the same on every machine).

    Materialises every column, so use it only on small layers. The entries are exact: applied to
    a basis vector, each output of a dense or convolutional map is a sum with at most one nonzero
    term, one float64 kernel entry times 1 (a float32 weight, exact in float64, or a residual
    kernel as the float64 pass forms it, see ``LipschitzResidualConv2d``).
    """
    in_dim = math.prod(layer.input_shape)
    basis = torch.eye(in_dim, dtype=torch.float64).reshape(in_dim, *layer.input_shape)
    with torch.no_grad():
        columns = layer.linear_map(basis, layer.weight.detach().cpu().double())
    return columns.reshape(in_dim, -1).T


def exact_spectral_norm(layer) -> float:
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


def conv_norm_upper_bound(layer, grids: int = 1) -> float:
    """Provable upper bound on the norm of a zero-padded, strided ``LipschitzConv2d`` (see module
    docstring): the smallest circular-convolution norm over ``grids`` valid grid sizes, before widening."""
    s = layer.stride
    kernel = polyphase_kernel(layer.kernel(layer.weight.detach().cpu().double()), s)
    left, right, top, bottom = layer.padding
    _, h, w = layer.input_shape
    kq = kernel.shape[-1]
    gh, gw = max(-(-(h + top + bottom) // s), kq), max(-(-(w + left + right) // s), kq)
    return min(_circular_conv_norm(kernel, (gh + d, gw + d)).item() for d in range(grids))


def _gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u) for float64, rounded up."""
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF) * ROUND_UP


def _product(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fl(a @ b)`` and an elementwise bound on its error.

    For an inner dimension n, in any summation order, with or without FMA:
    ``|fl(AB) - AB| <= gamma_n |A||B|`` (Higham 2002, eq. 3.13). ``|A||B|`` is itself computed in
    float64, where (nonnegative terms) ``fl(|A||B|) >= (1 - gamma_n) |A||B|``.
    """
    g = _gamma(a.shape[-1])
    return a @ b, (a.abs() @ b.abs()) * (g / (1 - g) * ROUND_UP)


def _symmetrised(m: torch.Tensor, error: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m + m^T) / 2`` and its error bound, given that of m (the exact matrix is symmetric)."""
    sym = (m + m.T) / 2
    return sym, (torch.maximum(error, error.T) + sym.abs() * UNIT_ROUNDOFF) * ROUND_UP


def _frobenius_up(m: torch.Tensor) -> float:
    """An upper bound on ``||m||_F`` (a bound on ``||m||_2``) for a nonnegative m."""
    return math.sqrt(float((m * m).sum()) * (1 + _gamma(m.numel() + 2))) * ROUND_UP


def rigorous_sigma_max(a: torch.Tensor) -> float:
    """A rigorous upper bound on the largest singular value of the float64 matrix ``a``, within
    about 1e-11 of it (relative), in about 13 k^3 flops plus a symmetric eigensolve of side k = min(a.shape).

    With G = a^T a (or a a^T, the smaller), ``||a||_2^2 = lambda_max(G)``:

    1. G is computed with an elementwise error bound E_G (Higham 2002, eq. 3.13); by Weyl's
       inequality ``lambda_max(G) <= lambda_max(S) + ||E_S||_F`` for the computed, symmetrised S.
    2. ``torch.linalg.eigh(S)`` gives an approximate eigenbasis Q. B = Q^T S Q is computed with an
       error bound E_B; B is nearly diagonal, and Gershgorin's theorem bounds its largest
       eigenvalue by ``max_i (B_ii + sum_{j != i} |B_ij|)``, plus ``||E_B||_F`` (Weyl).
    3. Ostrowski's theorem (Horn & Johnson, Thm 4.5.9): ``lambda_max(Q^T S Q) = theta lambda_max(S)``
       with theta >= ``lambda_min(Q^T Q) >= 1 - ||Q^T Q - I||_F`` (Q^T Q computed with its error bound).

    Nothing is trusted about the eigensolver: a poor Q only loosens the bound. Every constant above
    is rounded up (``ROUND_UP``, ``_gamma``), so the result holds in float64 arithmetic.
    """
    a = a.double()
    if a.shape[0] < a.shape[1]:
        a = a.T
    g, g_error = _symmetrised(*_product(a.T, a))
    lam_s_slack = _frobenius_up(g_error)
    q = torch.linalg.eigh(g).eigenvectors
    sq, sq_error = _product(g, q)
    b, b_error = _product(q.T, sq)
    b, b_error = _symmetrised(b, (b_error + q.T.abs() @ sq_error) * ROUND_UP)
    off_diagonal = b.abs().sum(dim=1) - b.diagonal().abs()
    gershgorin = float((b.diagonal() + off_diagonal * (1 + _gamma(len(b)))).max()) * ROUND_UP
    lam_b = gershgorin + _frobenius_up(b_error)
    qq, qq_error = _product(q.T, q)
    departure = _frobenius_up((qq - torch.eye(len(qq), dtype=qq.dtype)).abs() * ROUND_UP + qq_error)
    if departure >= 0.5:  # the eigensolver failed badly; no useful bound from this basis
        raise ArithmeticError(f"eigenvectors far from orthonormal (||Q^T Q - I||_F <= {departure:.3g})")
    lam_s = max(lam_b, 0.0) / (1 - departure) * ROUND_UP
    return math.sqrt((lam_s + lam_s_slack) * ROUND_UP) * ROUND_UP
