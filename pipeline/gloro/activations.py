"""1-Lipschitz activations: MinMax (Anil et al., 2019) and ReLU."""
from __future__ import annotations

import torch
from torch import nn


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
