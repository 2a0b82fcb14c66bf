"""Float64 convolutions on CUDA as one matrix product each, for the provable certificate.

The provable certificate runs f in float64 with cuDNN off (``precision.py``), where PyTorch's CUDA
convolution loops over the batch, one small GEMM per image. ``gemm_convolutions()`` computes each
float64 convolution as one GEMM over every output position of the batch instead: the same dot
products (length C_in * k * k, the products summed in some order, the bias added after), so the
rounding bound of ``rounding.py`` holds unchanged. It works on any module, exported programs
included, since it intercepts the ``aten.convolution`` operator itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode


def conv2d_as_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                   padding: tuple[int, int]) -> torch.Tensor:
    """``F.conv2d`` (no dilation, one group) as one matrix product over all output positions."""
    (sh, sw), (ph, pw) = stride, padding
    x = F.pad(x, (pw, pw, ph, ph))
    n, c, h, w = x.shape
    out_channels, _, kh, kw = weight.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    s_n, s_c, s_h, s_w = x.stride()
    patches = x.as_strided((n, ho, wo, c, kh, kw), (s_n, s_h * sh, s_w * sw, s_c, s_h, s_w))
    out = patches.reshape(n * ho * wo, c * kh * kw) @ weight.reshape(out_channels, -1).T
    if bias is not None:
        out = out + bias
    return out.view(n, ho, wo, out_channels).permute(0, 3, 1, 2)


class gemm_convolutions(TorchDispatchMode):
    """Inside this block, float64 2-D convolutions on ``devices`` (default CUDA) without gradient run
    as ``conv2d_as_gemm``; every other operator (and any convolution it does not cover) runs as usual."""

    def __init__(self, devices: tuple[str, ...] = ("cuda",)):
        super().__init__()
        self.devices = devices

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.convolution.default:
            x, weight, bias, stride, padding, dilation, transposed, _, groups = args
            if (x.dtype == torch.float64 and x.device.type in self.devices and x.dim() == 4 and not transposed
                    and groups == 1 and tuple(dilation) == (1, 1) and not torch.is_grad_enabled()):
                return conv2d_as_gemm(x, weight, bias, tuple(stride), tuple(padding))
        return func(*args, **kwargs)
