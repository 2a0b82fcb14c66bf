"""The provable bound is never below the exact norm; the report says how far above it is."""
import statistics

import pytest
import torch

from pipeline.gloro.bounds import exact_spectral_norm, polyphase_kernel, sound_spectral_norm
from pipeline.gloro.layers import LipschitzConv2d, LipschitzDense


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


def test_sound_bound_is_never_below_exact_norm(report):
    ratios: dict[str, list[float]] = {}
    for kind, layer in random_layers(150):
        exact, sound = exact_spectral_norm(layer), sound_spectral_norm(layer)
        assert sound >= exact, f"{layer}: sound bound {sound} < exact norm {exact}"
        ratios.setdefault(kind, []).append(sound / exact)
    for kind, values in sorted(ratios.items()):
        report(f"sound bound / exact norm, {kind} ({len(values)} random layers): "
               f"median {statistics.median(values):.4f}, max {max(values):.4f}")


@pytest.mark.parametrize("size", [14, 28])
def test_sound_bound_on_mnist_sized_convs(size, report):
    """On the paper's 2C2F-sized layers the circular bound is close to the exact norm."""
    conv = LipschitzConv2d(1 if size == 28 else 16, 4, 4, 2, (size, size), generator=torch.Generator().manual_seed(4))
    exact, sound = exact_spectral_norm(conv), sound_spectral_norm(conv)
    assert exact <= sound < 1.5 * exact
    report(f"sound bound / exact norm, conv k4 s2 on {size}x{size}: {sound / exact:.4f}")


def test_polyphase_kernel_reproduces_strided_conv():
    """A stride-s conv equals a stride-1 conv of the space-to-depth input with the polyphase kernel."""
    torch.manual_seed(5)
    w, x = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(1, 2, 8, 8, dtype=torch.float64)
    strided = torch.nn.functional.conv2d(x, w, stride=2)
    phases = x.reshape(1, 2, 4, 2, 4, 2).permute(0, 1, 3, 5, 2, 4).reshape(1, 8, 4, 4)
    assert torch.allclose(torch.nn.functional.conv2d(phases, polyphase_kernel(w, 2)), strided)


def test_sound_bound_rejects_unknown_layers():
    with pytest.raises(TypeError, match="no sound spectral-norm bound"):
        sound_spectral_norm(torch.nn.Linear(2, 2))
