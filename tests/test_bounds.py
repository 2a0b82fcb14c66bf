"""The provable bound is never below the exact norm, never above the circular bound; the report
says how far above the exact norm it is."""
import statistics

import pytest
import torch

from gloro_repro.gloro import layers
from gloro_repro.gloro.bounds import (
    SOUND_RTOL,
    conv_norm_upper_bound,
    exact_spectral_norm,
    polyphase_kernel,
    rigorous_sigma_max,
)
from gloro_repro.gloro.layers import LipschitzConv2d, LipschitzDense


def random_layers(count: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pick = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))
    for i in range(count):
        if i % 5 == 4:
            yield "dense", LipschitzDense(pick(1, 40), pick(1, 40), generator=g)
        else:
            stride = pick(1, 3)
            kernel = pick(1, 5)
            size = pick(max(kernel, 3), 10)
            init = "orthogonal" if i % 2 else "default"
            yield f"conv s{stride}", LipschitzConv2d(pick(1, 4), pick(1, 5), kernel, stride, (size, size), init, g)


def test_sound_bound_is_never_below_exact_norm_nor_above_the_circular_bound(report):
    ratios: dict[str, list[float]] = {}
    for kind, layer in random_layers(150):
        exact, sound = exact_spectral_norm(layer), layer.sound_bound()
        assert sound.value >= exact, f"{layer}: sound bound {sound} < exact norm {exact}"
        if isinstance(layer, LipschitzConv2d):
            circular = conv_norm_upper_bound(layer) * (1 + SOUND_RTOL)  # the bound before the near-exact one
            assert sound.value <= circular, f"{layer}: {sound} above the circular bound {circular}"
            ratios.setdefault(f"{kind}, circular bound", []).append(circular / exact)
        ratios.setdefault(f"{kind}, {sound.method} bound", []).append(sound.value / exact)
    for kind, values in sorted(ratios.items()):
        report(f"{kind} / exact norm - 1, {len(values)} random layers: "
               f"median {statistics.median(values) - 1:.1e}, max {max(values) - 1:.1e}")


def test_circular_bound_alone_stays_above_exact_norm(monkeypatch):
    """Layers too large to materialise get the circular bound, the smallest over several grids."""
    monkeypatch.setattr(layers, "EXACT_MAX_SIDE", 0)
    for kind, layer in random_layers(60, seed=1):
        if isinstance(layer, LipschitzConv2d):
            sound = layer.sound_bound()
            assert sound.method == "circular" and sound.value >= exact_spectral_norm(layer)
            assert sound.value <= conv_norm_upper_bound(layer) * (1 + SOUND_RTOL)


def test_rigorous_sigma_max_on_hard_matrices():
    """Repeated, clustered and zero singular values, wide and tall shapes: never below the SVD's
    value, and within 1e-9 of it."""
    g = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(300, 300, generator=g, dtype=torch.float64))
    cases = {
        "orthogonal x 3 (all singular values equal)": 3 * q,
        "rank 1": torch.randn(200, 1, generator=g, dtype=torch.float64) @ torch.randn(1, 50, generator=g,
                                                                                     dtype=torch.float64),
        "clustered top": q[:, :40] @ torch.diag(1 + 1e-9 * torch.arange(40, dtype=torch.float64)) @ q[:40, :40],
        "wide": torch.randn(20, 700, generator=g, dtype=torch.float64),
        "tall, tiny entries": 1e-30 * torch.randn(500, 30, generator=g, dtype=torch.float64),
        "zero": torch.zeros(30, 40, dtype=torch.float64),
    }
    for name, matrix in cases.items():
        exact = torch.linalg.matrix_norm(matrix, ord=2).item()
        bound = rigorous_sigma_max(matrix)
        assert exact <= bound <= exact * (1 + 1e-9) + 1e-300, f"{name}: {bound} vs {exact}"


@pytest.mark.parametrize("size", [14, 28])
def test_sound_bound_on_mnist_sized_convs(size, report):
    """On the paper's 2C2F-sized layers the circular bound is close to the exact norm."""
    conv = LipschitzConv2d(1 if size == 28 else 16, 4, 4, 2, (size, size), generator=torch.Generator().manual_seed(4))
    exact, sound = exact_spectral_norm(conv), conv.sound_bound().value
    circular = conv_norm_upper_bound(conv) * (1 + SOUND_RTOL)
    assert exact <= sound <= circular < 1.5 * exact
    report(f"conv k4 s2 on {size}x{size}, bound / exact norm - 1: provable {sound / exact - 1:.1e}, "
           f"circular {circular / exact - 1:.1e}")


def test_polyphase_kernel_reproduces_strided_conv():
    """A stride-s conv equals a stride-1 conv of the space-to-depth input with the polyphase kernel."""
    torch.manual_seed(5)
    w, x = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(1, 2, 8, 8, dtype=torch.float64)
    strided = torch.nn.functional.conv2d(x, w, stride=2)
    phases = x.reshape(1, 2, 4, 2, 4, 2).permute(0, 1, 3, 5, 2, 4).reshape(1, 8, 4, 4)
    assert torch.allclose(torch.nn.functional.conv2d(phases, polyphase_kernel(w, 2)), strided)
