"""Floating-point modes the certificates depend on: IEEE float32 (no TF32) and no cuDNN on CUDA.

TF32 (and oneDNN's reduced float32 modes on CPUs) round matmul and conv inputs to a 10-bit
mantissa: logits and power-iteration norms move by about 1e-3 relative, enough to void a margin
test and to stop power iteration below the true norm. The rounding bound of ``rounding.py``
models dot products computed in the working precision in any order, so it also excludes cuDNN's
FFT and Winograd convolutions; without cuDNN, PyTorch's CUDA convolutions are GEMMs.

``ieee_arithmetic()`` turns both off for a block; ``require_ieee`` refuses to run a provable
computation when either is on. Only torch's ``fp32_precision`` API is used (mixing it with the
legacy ``allow_tf32`` flags is an error in torch).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

FLOAT32_MODES = ("ieee", "tf32")


class ReducedPrecisionError(RuntimeError):
    """A provable computation was asked to run where float arithmetic is not IEEE."""


def _backends(device_type: str | None = None) -> dict[str, object]:
    """The backends whose float32 precision torch lets one choose, by name (those of one device type if given)."""
    b = torch.backends
    cuda = {"torch.backends.cuda.matmul": b.cuda.matmul, "torch.backends.cudnn.conv": b.cudnn.conv,
            "torch.backends.cudnn.rnn": b.cudnn.rnn}
    cpu = {"torch.backends.mkldnn.matmul": b.mkldnn.matmul, "torch.backends.mkldnn.conv": b.mkldnn.conv,
           "torch.backends.mkldnn.rnn": b.mkldnn.rnn}
    return {"cuda": cuda, "cpu": cpu}.get(device_type, cuda | cpu)


def _effective(leaf: str) -> str:
    """The precision a backend uses: its own setting, else its parent's, else the global one (IEEE if unset)."""
    parts = leaf.split(".")
    for depth in range(len(parts), 1, -1):
        node = torch.backends
        for part in parts[2:depth]:
            node = getattr(node, part)
        mode = getattr(node, "fp32_precision", "none")
        if mode != "none":
            return mode
    return "ieee"


def reduced_precision_flags(device_type: str | None = None) -> list[str]:
    """The backends (of ``device_type``, else all) that compute float32 below IEEE precision, e.g.
    ``torch.backends.cudnn.conv=tf32`` (torch's default for cuDNN convolutions)."""
    return [f"{name}={_effective(name)}" for name in _backends(device_type) if _effective(name) != "ieee"]


@contextmanager
def float32_precision(mode: str) -> Iterator[None]:
    """Run the block with every float32 matmul and conv backend at ``mode`` (``ieee`` or ``tf32``)."""
    if mode not in FLOAT32_MODES:
        raise ValueError(f"float32 precision {mode!r}; expected one of {FLOAT32_MODES}")
    saved = {name: backend.fp32_precision for name, backend in _backends().items()}
    matmul = torch.get_float32_matmul_precision()  # what Lightning and users read
    try:
        torch.set_float32_matmul_precision("highest" if mode == "ieee" else "high")
        for backend in _backends().values():
            backend.fp32_precision = mode
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        for name, backend in _backends().items():
            backend.fp32_precision = saved[name]


@contextmanager
def ieee_arithmetic() -> Iterator[None]:
    """Run the block in IEEE float32/float64 with cuDNN off: what provable bounds and convergence need."""
    enabled = torch.backends.cudnn.enabled
    try:
        torch.backends.cudnn.enabled = False
        with float32_precision("ieee"):
            yield
    finally:
        torch.backends.cudnn.enabled = enabled


def require_ieee(device: torch.device, dtype: torch.dtype, what: str) -> None:
    """Refuse (``ReducedPrecisionError``) to run ``what`` on ``device`` in ``dtype`` where the
    arithmetic it assumes is not guaranteed: reduced float32 modes, or cuDNN on CUDA."""
    device_type = torch.device(device).type
    problems = reduced_precision_flags(device_type) if dtype == torch.float32 else []
    if device_type == "cuda" and torch.backends.cudnn.enabled:
        problems.append("torch.backends.cudnn.enabled=True (FFT and Winograd convolutions)")
    if problems:
        raise ReducedPrecisionError(f"{what} assumes IEEE {str(dtype).removeprefix('torch.')} dot products, but "
                                    f"{', '.join(problems)}; run it inside gloro_repro.gloro.ieee_arithmetic()")
