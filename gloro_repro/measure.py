"""Per-instance memory (Appendix E), measured the same way for GloRo and Standard models.

On a GPU: peak allocated CUDA memory while the work runs, divided by the batch size (the
PyTorch counterpart of the paper's TF ``MaxBytesInUse``). On a CPU there is no allocator peak
to read, so the documented equivalent is the tensor memory the work must hold at once: for
training, the bytes autograd saves for the backward pass; for inference, the bytes of every
tensor the forward pass creates (an upper bound on what it holds at once). Both are divided by
the batch size and given in MB.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

MB = 2 ** 20
T = TypeVar("T")


@contextmanager
def saved_for_backward() -> Iterator[dict[int, int]]:
    """Collect ``{storage pointer: bytes}`` of every tensor autograd saves inside the block."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield storages


class _NewTensorBytes(TorchDispatchMode):
    """Counts the bytes of every tensor an operation creates (outputs that are views of inputs excluded)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.total += t.untyped_storage().nbytes()
        return out


def forward_bytes(f, x: torch.Tensor) -> int:
    """Bytes of all intermediate tensors one forward pass of ``f`` creates on ``x`` (no gradient).

    Works for any callable, including an exported ``model.pt2`` program.
    """
    with torch.no_grad(), _NewTensorBytes() as counter:
        f(x)
    return counter.total


def synchronise(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures the work and not its launch."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``work()`` and its seconds, queued GPU work included."""
    synchronise(device)
    start = time.perf_counter()
    result = work()
    synchronise(device)
    return result, time.perf_counter() - start


def cuda_peak_mb_per_instance(work: Callable[[], object], batch_size: int, device: torch.device) -> float:
    """Peak CUDA memory allocated while ``work()`` runs, per instance, in MB."""
    synchronise(device)
    torch.cuda.reset_peak_memory_stats(device)
    work()
    synchronise(device)
    return torch.cuda.max_memory_allocated(device) / batch_size / MB


def inference_mb_per_instance(f: nn.Module, x: torch.Tensor) -> float:
    """Per-instance memory of a forward pass of ``f`` on the batch ``x`` (see the module docstring)."""
    if x.device.type == "cuda":
        with torch.no_grad():
            return cuda_peak_mb_per_instance(lambda: f(x), len(x), x.device)
    return forward_bytes(f, x) / len(x) / MB
