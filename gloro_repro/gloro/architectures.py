"""Networks built from compact spec strings, and the paper's architectures (Appendix B).

A spec is a ``-``-separated list of layers: ``c<C>k<K>s<S>`` is a conv with C output
channels, a KxK kernel, stride S and SAME zero padding; ``d<D>`` is a dense layer with D
outputs. An activation follows every layer but the last; convs must precede dense layers.
Example: ``c16k4s2-c32k4s2-d100-d10`` is 2C2F for 10 classes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from .activations import make_activation
from .layers import LipschitzConv2d, LipschitzDense

# Hidden layers only: the output layer d<num_classes> is appended by ``architecture_spec``.
ARCHITECTURES = {
    "digits": "c16k3s1-c32k4s2-d100",
    "2C2F": "c16k4s2-c32k4s2-d100",
    "4C3F": "c32k3s1-c32k4s2-c64k3s1-c64k4s2-d512-d512",
    "6C2F": "c32k3s1-c32k3s1-c32k4s2-c64k3s1-c64k3s1-c64k4s2-d512",
    # The supplement's table, literally: one dense layer, the output.
    "8C2F_supplement": "c64k3s1-c64k3s1-c64k4s2-c128k3s1-c128k4s2-c256k3s1-c256k4s2",
    # The reference code's 8C2F (eight convs, two dense layers, as the name says).
    "8C2F": "c64k3s1-c64k3s1-c64k4s2-c128k3s1-c128k3s1-c128k4s2-c256k3s1-c256k4s2-d256",
}

_CONV = re.compile(r"c(\d+)k(\d+)s(\d+)")
_DENSE = re.compile(r"d(\d+)")


@dataclass(frozen=True)
class ConvSpec:
    channels: int
    kernel: int
    stride: int


@dataclass(frozen=True)
class DenseSpec:
    features: int


def architecture_spec(name_or_spec: str, num_classes: int) -> str:
    """The full spec of a named architecture (output layer appended), or a custom spec as is."""
    if name_or_spec in ARCHITECTURES:
        return f"{ARCHITECTURES[name_or_spec]}-d{num_classes}"
    return name_or_spec


def parse_spec(spec: str) -> list[ConvSpec | DenseSpec]:
    """Parse a spec string into layer specs; raises ``ValueError`` naming the bad token."""
    layers: list[ConvSpec | DenseSpec] = []
    for token in spec.split("-"):
        if m := _CONV.fullmatch(token):
            if layers and isinstance(layers[-1], DenseSpec):
                raise ValueError(f"spec {spec!r}: conv {token!r} after a dense layer; convs must come first")
            layer = ConvSpec(*map(int, m.groups()))
        elif m := _DENSE.fullmatch(token):
            layer = DenseSpec(int(m.group(1)))
        else:
            raise ValueError(
                f"spec {spec!r}: bad layer {token!r}; expected c<C>k<K>s<S> (conv) or d<D> (dense), "
                f"or an architecture name in {sorted(ARCHITECTURES)}")
        if min(vars(layer).values()) < 1:
            raise ValueError(f"spec {spec!r}: layer {token!r} has a zero size")
        layers.append(layer)
    if not isinstance(layers[-1], DenseSpec):
        raise ValueError(f"spec {spec!r}: the last layer must be dense (the logits)")
    return layers


def build_network(arch: str, input_shape: tuple[int, int, int], num_classes: int,
                  activation: str = "minmax", init: str = "default", seed: int | None = None) -> nn.Sequential:
    """Build the logit network f for ``[C, H, W]`` inputs from an architecture name or spec.

    Layers are Lipschitz-tracked; biases start at zero. ``seed`` fixes the weights and the
    initial power-iteration iterates.
    """
    layers = parse_spec(architecture_spec(arch, num_classes))
    if layers[-1].features != num_classes:
        raise ValueError(f"architecture {arch!r} ends in d{layers[-1].features}, "
                         f"but the data has {num_classes} classes")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    channels, h, w = input_shape
    modules: list[nn.Module] = []
    flat = None
    for i, layer in enumerate(layers):
        if isinstance(layer, ConvSpec):
            conv = LipschitzConv2d(channels, layer.channels, layer.kernel, layer.stride, (h, w), init, generator)
            modules.append(conv)
            channels, h, w = conv.output_shape
        else:
            if flat is None:
                flat = channels * h * w
                modules.append(nn.Flatten())
            modules.append(LipschitzDense(flat, layer.features, init, generator))
            flat = layer.features
        if i < len(layers) - 1:
            modules.append(make_activation(activation))
    return nn.Sequential(*modules)
