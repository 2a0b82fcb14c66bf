"""1-Lipschitz activations: MinMax (Anil et al., 2019) and ReLU."""
from __future__ import annotations

import torch
from torch import nn


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
        return torch.cat([torch.minimum(a, b), torch.maximum(a, b)], dim=1)


ACTIVATIONS = {"minmax": MinMax, "relu": nn.ReLU}


def make_activation(name: str) -> nn.Module:
    """The activation called ``name`` (``minmax`` or ``relu``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None
