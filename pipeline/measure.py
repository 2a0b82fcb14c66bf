"""Per-instance memory (Appendix E), measured the same way for GloRo and Standard models.

On a GPU: peak allocated CUDA memory while the work runs, divided by the batch size (the
PyTorch counterpart of the paper's TF ``MaxBytesInUse``). On a CPU there is no allocator peak
to read, so the documented equivalent is the tensor memory the work must hold at once: for
training, the bytes autograd saves for the backward pass; for inference, the bytes of every
layer's output in one forward pass. Both are divided by the batch size and given in MB.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

MB = 2 ** 20


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


def layer_output_bytes(f: nn.Module, x: torch.Tensor) -> int:
    """Sum of the output bytes of every leaf module of ``f`` on ``x`` (no gradient)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    leaves = [m for m in f.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            f(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def cuda_peak_mb_per_instance(work: Callable[[], object], batch_size: int, device: torch.device) -> float:
    """Peak CUDA memory allocated while ``work()`` runs, per instance, in MB."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    work()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / batch_size / MB


def inference_mb_per_instance(f: nn.Module, x: torch.Tensor) -> float:
    """Per-instance memory of a forward pass of ``f`` on the batch ``x`` (see the module docstring)."""
    if x.device.type == "cuda":
        with torch.no_grad():
            return cuda_peak_mb_per_instance(lambda: f(x), len(x), x.device)
    return layer_output_bytes(f, x) / len(x) / MB
