"""The networks the core can bound, and nothing else: a chain whose every link declares its norm.

The margin bounds multiply the norms of the modules f runs one after another, which holds only
if f's forward is exactly that chain. The core can prove so for an ``nn.Sequential`` (nested ones
flattened) whose links are tracked layers (each owns its linear operator, a residual block
included: ``LipschitzResidualConv2d``), activations that declare their Lipschitz constant, and
shape-only modules, ending in the ``LipschitzDense`` that gives the logits. Any other module
with a forward of its own (a residual add, a scaling, branches, a custom container) could do
anything with its children, so it is refused with a message naming it.
"""
from __future__ import annotations

import math

from torch import nn

from .activations import lipschitz_constant
from .layers import LipschitzDense, LipschitzLinear

HOW = ("express the network as an nn.Sequential of tracked layers (LipschitzLinear subclasses, each owning its "
       "whole linear operator: a residual block x + conv(x) is one LipschitzResidualConv2d, a fixed scaling belongs "
       "in a layer's weight), activations that declare their constant (attribute `lipschitz`), and shape-only modules "
       "(nn.Flatten, nn.Unflatten, nn.Identity)")


class UnboundableNetworkError(ValueError):
    """A network whose Lipschitz constant the core cannot prove it bounds."""


def _refuse(path: str, module: nn.Module, why: str) -> UnboundableNetworkError:
    return UnboundableNetworkError(f"cannot bound {path} ({type(module).__name__}): {why}; {HOW}")


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _links(module: nn.Module, path: str):
    """(path, module) of every link of a Sequential, nested Sequentials flattened."""
    for name, child in module._modules.items():  # as forward runs them (named_children skips repeats)
        if child is None:
            continue
        child_path = f"{path}.{name}"
        if _has_hooks(child):
            raise _refuse(child_path, child, "it has forward hooks, which may change what it computes")
        if isinstance(child, nn.Sequential):
            if type(child).forward is not nn.Sequential.forward:
                raise _refuse(child_path, child, "an nn.Sequential subclass with its own forward")
            yield from _links(child, child_path)
        else:
            yield child_path, child


def network_chain(f: nn.Module, path: str = "f") -> list[nn.Module]:
    """f's modules in the order its forward runs them; raises ``UnboundableNetworkError`` for any
    network whose forward is not provably that chain (see the module docstring)."""
    if not isinstance(f, nn.Sequential) or type(f).forward is not nn.Sequential.forward:
        raise _refuse(path, f, "only an nn.Sequential chain is known to run its modules one after another")
    if _has_hooks(f):
        raise _refuse(path, f, "it has forward hooks, which may change what it computes")
    chain, seen, last_path = [], {}, path
    for link_path, link in _links(f, path):
        last_path = link_path
        if isinstance(link, LipschitzLinear):
            inner = [name for name, m in link.named_modules() if m is not link and isinstance(m, LipschitzLinear)]
            if inner:
                raise _refuse(link_path, link, f"a tracked layer containing tracked layers ({inner}), composed by "
                                               "its own forward")
            if id(link) in seen:
                raise _refuse(link_path, link, f"the same tracked layer as {seen[id(link)]}, used twice (its norm "
                                               "would be counted once); use two layers")
            seen[id(link)] = link_path
        elif lipschitz_constant(link) is None:
            raise _refuse(link_path, link, "it declares no Lipschitz constant")
        elif any(isinstance(m, LipschitzLinear) for m in link.modules()):
            raise _refuse(link_path, link, "an activation containing tracked layers")
        chain.append(link)
    if not chain or not isinstance(chain[-1], LipschitzDense):
        raise _refuse(last_path, chain[-1] if chain else f,
                      "the chain must end in the LipschitzDense that gives the logits (the margin bounds use its rows)")
    return chain


def tracked_chain(chain: list[nn.Module]) -> list[LipschitzLinear]:
    """The tracked layers of a validated chain, in forward order."""
    return [link for link in chain if isinstance(link, LipschitzLinear)]


def activations_lipschitz(chain: list[nn.Module]) -> float:
    """The product of the declared constants of a validated chain's other links."""
    return math.prod(lipschitz_constant(link) for link in chain if not isinstance(link, LipschitzLinear))
