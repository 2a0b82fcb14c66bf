"""CUDA graphs of the training step and of certification: one launch per batch instead of hundreds.

On the paper's networks a GloRo step launches hundreds of small kernels (five power iterations per
layer, the margin bounds, the loss and their backward), so on a GPU its time is the CPU's launch
time, not the GPU's work. ``GraphedStep`` captures forward and backward once per batch shape and
replays them; ``GraphedFunction`` does the same for a pure function such as the margin test.
Captured work is the same kernels on the same data, so results match the eager step up to the
order of floating-point reductions. Elsewhere (a CPU, or ``enabled=False``) both run eagerly.

A graph bakes in every Python value it was built from (eps, lambda, the network's structure); a
caller names those values as ``key`` and a new key recaptures, reusing the shape's memory pool,
so memory stays flat over any number of epochs. The short last batch of an epoch gets a graph of
its own (nothing is padded or dropped).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable

import torch
from torch import nn

Outputs = dict[str, torch.Tensor]
WARMUP_CALLS = 2  # eager calls on a side stream before the first capture (lazy CUDA/cuBLAS set-up)


def graphs_available(*tensors: torch.Tensor) -> bool:
    """Whether CUDA graphs can run on these tensors: all on a CUDA device."""
    return all(t.is_cuda for t in tensors) and torch.cuda.is_available()


def _signature(*tensors: torch.Tensor) -> tuple:
    return tuple((tuple(t.shape), t.dtype, t.device) for t in tensors)


def _warm_up(work: Callable[[], object]) -> None:
    """Run ``work`` ``WARMUP_CALLS`` times on a side stream, as CUDA graph capture requires."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_CALLS):
            work()
    torch.cuda.current_stream().wait_stream(side)


@dataclass
class _Captured:
    key: Hashable
    graph: torch.cuda.CUDAGraph
    pool: tuple
    inputs: tuple[torch.Tensor, ...]
    outputs: Outputs
    grads: list[torch.Tensor | None]
    addresses: tuple[int, ...]


def _retire(captured: _Captured | None) -> _Captured | None:
    """A graph about to be replaced, holding no tensors any more: what it allocated is free for the
    next capture into its pool, while the graph itself keeps that pool alive until then."""
    if captured is not None:
        captured.inputs, captured.outputs, captured.grads = (), {}, []
    return captured


def _pool(previous: _Captured | None) -> tuple:
    """The memory pool of the graph being replaced (so memory stays flat), else a new one."""
    if previous is None:
        return torch.cuda.graph_pool_handle()
    return previous.pool


class GraphedStep:
    """Forward and backward of a training loss, captured per (batch shape, ``key``) and replayed.

    ``step(x, y, loss_of, key)`` leaves every parameter's ``.grad`` as ``zero_grad(set_to_none=True)``
    followed by ``loss_of(x, y)["loss"].backward()`` would, and returns ``loss_of``'s outputs
    (detached; with graphs, valid until the next call). The optimiser step stays outside (a fused
    Adam is one launch), so the caller's loop, schedules and checkpoints are unchanged.

    The module's state is restored after the warm-up calls (power iteration moves its iterates),
    so the first replay continues from exactly where the eager loop would. A graph whose
    parameters or buffers have moved in memory (``.to()``, ``load_state_dict`` with ``assign``)
    is recaptured.
    """

    def __init__(self, module: nn.Module, enabled: bool = True):
        self.module = module
        self.enabled = enabled
        self._graphs: dict[tuple, _Captured] = {}
        self._warm = False
        self.captures = 0  # how many graphs were captured (tests and benchmarks read it)

    def _parameters(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def _addresses(self) -> tuple[int, ...]:
        return tuple(t.data_ptr() for t in (*self.module.parameters(), *self.module.buffers()))

    def eager(self, x: torch.Tensor, y: torch.Tensor, loss_of: Callable[[torch.Tensor, torch.Tensor], Outputs]
              ) -> Outputs:
        """The same step without graphs."""
        for p in self._parameters():
            p.grad = None
        outputs = loss_of(x, y)
        outputs["loss"].backward()
        return {name: value.detach() for name, value in outputs.items()}

    def __call__(self, x: torch.Tensor, y: torch.Tensor, loss_of: Callable[[torch.Tensor, torch.Tensor], Outputs],
                 key: Hashable = ()) -> Outputs:
        if not (self.enabled and graphs_available(x, y)):
            return self.eager(x, y, loss_of)
        signature = _signature(x, y)
        captured = self._graphs.get(signature)
        if captured is None or captured.key != key or captured.addresses != self._addresses():
            captured = self._capture(signature, x, y, loss_of, key, _retire(self._graphs.pop(signature, None)))
        for static, value in zip(captured.inputs, (x, y)):
            static.copy_(value)
        captured.graph.replay()
        for p, grad in zip(self._parameters(), captured.grads):
            p.grad = grad  # each shape's graph writes its own gradient buffers
        return captured.outputs

    def _capture(self, signature: tuple, x: torch.Tensor, y: torch.Tensor, loss_of, key: Hashable,
                 previous: _Captured | None) -> _Captured:
        if not self._warm:
            saved = {name: value.clone() for name, value in self.module.state_dict().items()}
            _warm_up(lambda: self.eager(x, y, loss_of))
            with torch.no_grad():
                for name, value in self.module.state_dict().items():
                    value.copy_(saved[name])
            self._warm = True
        params = self._parameters()
        for p in params:
            p.grad = None  # backward inside the capture allocates fresh gradients in the graph's pool
        inputs, pool = (x.clone(), y.clone()), _pool(previous)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            outputs = loss_of(*inputs)
            outputs["loss"].backward()
        outputs = {name: value.detach() for name, value in outputs.items()}
        captured = _Captured(key, graph, pool, inputs, outputs, [p.grad for p in params], self._addresses())
        del previous  # only now: the pool stays in use while the new graph takes over its free memory
        self._graphs[signature] = captured
        self.captures += 1
        return captured


class GraphedFunction:
    """``fn(x)`` (no gradient, no state changed) replayed from a CUDA graph per input shape and ``key``.

    Returns ``fn``'s outputs (a dict of tensors); with graphs they are overwritten by the next call.
    """

    def __init__(self, fn: Callable[[torch.Tensor], Outputs], enabled: bool = True):
        self.fn = fn
        self.enabled = enabled
        self._graphs: dict[tuple, _Captured] = {}
        self.captures = 0

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, key: Hashable = ()) -> Outputs:
        if not (self.enabled and graphs_available(x)):
            return self.fn(x)
        signature = _signature(x)
        captured = self._graphs.get(signature)
        if captured is None or captured.key != key:
            previous = _retire(self._graphs.pop(signature, None))
            _warm_up(lambda: self.fn(x))
            static, pool = x.clone(), _pool(previous)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                outputs = self.fn(static)
            captured = _Captured(key, graph, pool, (static,), outputs, [], ())
            del previous
            self._graphs[signature] = captured
            self.captures += 1
        captured.inputs[0].copy_(x)
        captured.graph.replay()
        return captured.outputs
