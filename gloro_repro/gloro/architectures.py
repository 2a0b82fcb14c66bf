"""Networks built from compact spec strings, and the paper's architectures (Appendix B).

A spec is a ``-``-separated list of layers: ``c<C>k<K>s<S>`` is a conv with C output
channels, a KxK kernel, stride S and SAME zero padding; ``r<K>`` is a linear residual block
``x + conv(x)`` with a KxK kernel (LiResNet's block, one tracked layer with kernel ``I + W``;
``r<K>x<N>`` is N of them); ``d<D>`` is a dense layer with D outputs. An activation follows every
layer but the last; convs and residual blocks must precede dense layers.
Example: ``c16k4s2-c32k4s2-d100-d10`` is 2C2F for 10 classes.

LiResNet (Hu, Leino, Wang, Fredrikson, NeurIPS 2023): a convolutional stem, residual blocks at
one width, a strided-conv neck that reduces to a vector, and a dense head. Its residual branches
start small (``W ~ N(0, 1 / (C K^2)^2)``, as its public code does), so every block starts near
the identity: norm about 1 whatever the depth.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from .activations import make_activation
from .layers import LipschitzConv2d, LipschitzDense, LipschitzResidualConv2d

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
    # LiResNets sized so every block's operator has at most 2,048 dimensions (near-exact bounds)
    "LiResNet-digits": "c16k3s1-r3-c32k4s2-d100",           # 8x8: a block at 16 x 8 x 8
    "LiResNet-S": "c32k4s2-c32k4s2-r3x3-c64k3s1-d256",       # 28x28: blocks at 32 x 7 x 7
    # the paper's CIFAR-10 / Tiny-ImageNet shape, narrower (L12W256): stem, 12 blocks, neck, head
    "LiResNet-L12W256": "c256k3s2-r3x12-c256k4s4-d2048",
}

_CONV = re.compile(r"c(\d+)k(\d+)s(\d+)")
_DENSE = re.compile(r"d(\d+)")
_RESIDUAL = re.compile(r"r(\d+)(?:x(\d+))?")


@dataclass(frozen=True)
class ConvSpec:
    channels: int
    kernel: int
    stride: int


@dataclass(frozen=True)
class ResidualSpec:
    kernel: int


@dataclass(frozen=True)
class DenseSpec:
    features: int


def architecture_spec(name_or_spec: str, num_classes: int) -> str:
    """The full spec of a named architecture (output layer appended), or a custom spec as is."""
    if name_or_spec in ARCHITECTURES:
        return f"{ARCHITECTURES[name_or_spec]}-d{num_classes}"
    return name_or_spec


def parse_spec(spec: str) -> list[ConvSpec | ResidualSpec | DenseSpec]:
    """Parse a spec string into layer specs; raises ``ValueError`` naming the bad token."""
    layers: list[ConvSpec | ResidualSpec | DenseSpec] = []
    for token in spec.split("-"):
        repeat = 1
        if m := _CONV.fullmatch(token):
            layer = ConvSpec(*map(int, m.groups()))
        elif m := _RESIDUAL.fullmatch(token):
            layer, repeat = ResidualSpec(int(m.group(1))), int(m.group(2) or 1)
            if layer.kernel % 2 == 0:
                raise ValueError(f"spec {spec!r}: residual block {token!r} needs an odd kernel (a centre tap)")
            if not layers or isinstance(layers[0], ResidualSpec):
                raise ValueError(f"spec {spec!r}: residual block {token!r} needs a conv stem before it")
        elif m := _DENSE.fullmatch(token):
            layer = DenseSpec(int(m.group(1)))
        else:
            raise ValueError(
                f"spec {spec!r}: bad layer {token!r}; expected c<C>k<K>s<S> (conv), r<K> or r<K>x<N> (residual "
                f"blocks) or d<D> (dense), or an architecture name in {sorted(ARCHITECTURES)}")
        if not isinstance(layer, DenseSpec) and layers and isinstance(layers[-1], DenseSpec):
            raise ValueError(f"spec {spec!r}: {token!r} after a dense layer; convs and residual blocks come first")
        if min(vars(layer).values()) < 1 or repeat < 1:
            raise ValueError(f"spec {spec!r}: layer {token!r} has a zero size")
        layers.extend([layer] * repeat)
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
        elif isinstance(layer, ResidualSpec):
            block = LipschitzResidualConv2d(channels, layer.kernel, (h, w), generator=generator)
            with torch.no_grad():
                block.weight.normal_(0, 1 / (channels * layer.kernel ** 2), generator=generator)
            modules.append(block)
        else:
            if flat is None:
                flat = channels * h * w
                modules.append(nn.Flatten())
            modules.append(LipschitzDense(flat, layer.features, init, generator))
            flat = layer.features
        if i < len(layers) - 1:
            modules.append(make_activation(activation))
    return nn.Sequential(*modules)
