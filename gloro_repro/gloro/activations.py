"""1-Lipschitz activations, MinMax (Anil et al., 2019) and ReLU, and what the bounds need of any
module between the tracked layers.

Each such module declares its L2 Lipschitz constant and how an elementwise bound on its input
(its magnitude, or its rounding error) passes to its output: the attribute ``lipschitz`` and the
method ``propagate_bound``. torch's ReLU, Flatten, Unflatten and Identity are accepted as they are: they are
1-Lipschitz, and applied to a nonnegative bound they are exactly what propagates it.
"""
from __future__ import annotations

import torch
from torch import nn

TORCH_ONE_LIPSCHITZ = (nn.ReLU, nn.Flatten, nn.Unflatten, nn.Identity)


def lipschitz_constant(module: nn.Module) -> float | None:
    """The module's declared L2 Lipschitz constant, or None when it declares none."""
    if isinstance(module, TORCH_ONE_LIPSCHITZ):
        return 1.0
    return getattr(module, "lipschitz", None)


def propagate_bound(module: nn.Module, bound: torch.Tensor) -> torch.Tensor:
    """An elementwise bound on the module's output magnitude or error, from one on its input's.

    Assumes the module is computed exactly (true of the activations here: comparisons and copies).
    """
    if isinstance(module, TORCH_ONE_LIPSCHITZ):  # |relu(a)| <= |a|, |relu(a) - relu(b)| <= |a - b|
        return module(bound)
    if not hasattr(module, "propagate_bound"):
        raise ValueError(f"no rounding model for {type(module).__name__}: give it propagate_bound")
    return module.propagate_bound(bound)


class _SortPairs(torch.autograd.Function):
    """[min(a, b), max(a, b)] whose backward routes each gradient through the saved order.

    It saves a one-byte mask instead of both float inputs, and its backward is two ``where``s
    instead of autograd's tie-splitting ``minimum``/``maximum`` backward (which took a quarter of
    a plain training step's time on CPU). At ties the whole gradient goes to one input, which is
    the gradient of the permutation MinMax applies there.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        ctx.save_for_backward(a > b)
        return sort_pairs(a, b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (swapped,) = ctx.saved_tensors
        low, high = grad.chunk(2, dim=1)
        out = torch.empty_like(grad)
        torch.where(swapped, high, low, out=out[:, :low.shape[1]])
        torch.where(swapped, low, high, out=out[:, low.shape[1]:])
        return out


def sort_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[min(a, b), max(a, b)]`` along dim 1, written in place into one output (no ``cat`` copy)."""
    out = torch.empty(a.shape[0], 2 * a.shape[1], *a.shape[2:], dtype=a.dtype, device=a.device)
    torch.minimum(a, b, out=out[:, :a.shape[1]])
    torch.maximum(a, b, out=out[:, a.shape[1]:])
    return out


class MinMax(nn.Module):
    """Sorts channel pairs: splits the channels (dim 1) into halves a, b and returns [min, max].

    A permutation of sorted pairs, so it is 1-Lipschitz in L2 and gradient-norm preserving.

    Shape:
        ``[N, C, ...]`` -> ``[N, C, ...]`` with C even.
    """

    lipschitz = 1.0

    @staticmethod
    def propagate_bound(bound: torch.Tensor) -> torch.Tensor:
        """Both outputs of a pair take the larger bound of the pair: min and max move by at most that."""
        return torch.maximum(*bound.chunk(2, dim=1)).repeat(1, 2, *[1] * (bound.dim() - 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % 2:
            raise ValueError(f"MinMax needs an even number of channels/features, got {x.shape[1]}")
        a, b = x.chunk(2, dim=1)
        if torch.compiler.is_exporting():  # plain ops, so the exported program runs with or without grad
            return torch.cat([torch.minimum(a, b), torch.maximum(a, b)], dim=1)
        if x.requires_grad and torch.is_grad_enabled():
            return _SortPairs.apply(x)
        return sort_pairs(a, b)


ACTIVATIONS = {"minmax": MinMax, "relu": nn.ReLU}


def make_activation(name: str) -> nn.Module:
    """The activation called ``name`` (``minmax`` or ``relu``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None
