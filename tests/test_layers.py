"""Tracked layers: SAME padding, adjoints, power iteration against exact SVD norms, gradients."""
import pytest
import torch

from gloro_repro.gloro.bounds import exact_spectral_norm, operator_matrix
from gloro_repro.gloro.layers import LipschitzConv2d, LipschitzDense, same_padding

CONVS = [  # (C_in, C_out, kernel, stride, size)
    (1, 4, 3, 1, 6), (3, 5, 3, 1, 7), (2, 4, 4, 2, 8), (2, 3, 4, 2, 7), (3, 4, 5, 2, 9),
    (2, 2, 3, 3, 8), (4, 6, 1, 1, 5), (3, 2, 2, 2, 6),
    (2, 3, 1, 2, 6),  # SAME pads nothing and the last row is never read: the adjoint needs output padding
]


@pytest.mark.parametrize("size,kernel,stride,expected", [
    (28, 4, 2, (1, 1)), (32, 4, 2, (1, 1)), (28, 3, 1, (1, 1)), (8, 4, 2, (1, 1)),
    (7, 4, 2, (1, 2)), (5, 1, 1, (0, 0)), (6, 2, 2, (0, 0)), (9, 5, 3, (1, 1)), (10, 4, 3, (1, 2)),
])
def test_same_padding_matches_tensorflow(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


@pytest.mark.parametrize("c_in,c_out,k,s,n", CONVS)
def test_conv_output_size_and_adjoint(c_in, c_out, k, s, n):
    torch.manual_seed(0)
    conv = LipschitzConv2d(c_in, c_out, k, s, (n, n))
    x = torch.randn(3, c_in, n, n, dtype=torch.float64)
    w = conv.weight.detach().double()
    y = conv.linear_map(x, w)
    assert y.shape == (3, c_out, -(-n // s), -(-n // s)) and conv.output_shape == y.shape[1:]
    v = torch.randn_like(y)
    assert torch.allclose((y * v).sum(), (x * conv.adjoint_map(v, w)).sum(), rtol=1e-10)


@pytest.mark.parametrize("c_in,c_out,k,s,n", CONVS)
def test_converged_conv_norm_matches_svd(c_in, c_out, k, s, n):
    torch.manual_seed(1)
    conv = LipschitzConv2d(c_in, c_out, k, s, (n, n))
    iterations = conv.converge(tol=1e-8)
    assert 1 <= iterations < 100_000
    assert conv.lipschitz().item() == pytest.approx(exact_spectral_norm(conv), rel=1e-3)


@pytest.mark.parametrize("c_in,c_out,k,s,n", CONVS)
def test_converge_on_the_materialised_matrix_reaches_the_norm(c_in, c_out, k, s, n, monkeypatch):
    """Small layers converge on their matrix, from its top singular direction: the exact norm, to float32
    rounding, and never below what the two maps reach."""
    from gloro_repro.gloro import layers

    sigmas = []
    for entries in (layers.MATRIX_MAX_ENTRIES, 0):  # the matrix, then the maps
        monkeypatch.setattr(layers, "MATRIX_MAX_ENTRIES", entries)
        torch.manual_seed(1)
        conv = LipschitzConv2d(c_in, c_out, k, s, (n, n))
        assert (conv._matrix() is not None) == (entries > 0)
        conv.power_iterate(3)  # a partly converged start, as after training steps
        assert conv.converge(tol=1e-6) < 100_000
        sigmas.append(conv.lipschitz().item())
    assert sigmas[0] == pytest.approx(exact_spectral_norm(conv), rel=1e-6) and sigmas[0] >= sigmas[1] * (1 - 1e-6)


def test_close_top_singular_values_fool_the_window_test_but_not_the_matrix_start(report):
    """Top singular values 1 and 0.999, the iterate almost along the second: the rise per window is tiny,
    so the maps alone stop below the norm; the matrix start lands on it."""
    from gloro_repro.gloro import layers

    g = torch.Generator().manual_seed(0)
    left, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    sigma = torch.cat([torch.tensor([1.0, 0.999]), torch.linspace(0.5, 0.1, 28, dtype=torch.float64)])
    weight = (left[:, :30] * sigma) @ right.T
    gaps = []
    for entries in (0, layers.MATRIX_MAX_ENTRIES):  # the maps alone, then the matrix start
        dense = LipschitzDense(30, 40)
        with torch.no_grad():
            dense.weight.copy_(weight.float())
            dense.u.copy_((right[:, 1] + 1e-4 * right[:, 0]).float()[None])
        layers.MATRIX_MAX_ENTRIES, saved = entries, layers.MATRIX_MAX_ENTRIES
        try:
            dense.converge(tol=1e-5)
        finally:
            layers.MATRIX_MAX_ENTRIES = saved
        gaps.append(1 - dense.lipschitz().item())
    assert gaps[0] > 1e-4 and abs(gaps[1]) < 1e-6
    report(f"power iteration with top singular values 1 and 0.999, iterate near the second: the window test "
           f"stops {gaps[0]:.1e} below the norm; started from the matrix's top direction, {abs(gaps[1]):.0e}")


def test_paper_tolerance_can_stop_below_the_norm(report):
    """Power iteration creeps up from below: the paper's 1e-5 per-step tolerance is no error bound."""
    gaps = []
    for i, (c_in, c_out, k, s, n) in enumerate(CONVS):
        torch.manual_seed(1)
        conv = LipschitzConv2d(c_in, c_out, k, s, (n, n))
        conv.converge(tol=1e-5)
        gaps.append(1 - conv.lipschitz().item() / exact_spectral_norm(conv))
    assert min(gaps) > -1e-6  # never meaningfully above the exact norm
    report(f"power iteration at tol 1e-5: up to {100 * max(gaps):.3f}% below the exact norm "
           f"on {len(CONVS)} random convs")


@pytest.mark.parametrize("shape", [(5, 3), (20, 7), (64, 100), (10, 10)])
def test_converged_dense_norm_matches_svd(shape):
    torch.manual_seed(2)
    dense = LipschitzDense(shape[1], shape[0])
    dense.converge(tol=1e-5)
    exact = torch.linalg.matrix_norm(dense.weight.double(), 2).item()
    assert dense.lipschitz().item() == pytest.approx(exact, rel=1e-3)


def test_operator_matrix_of_dense_is_its_weight():
    dense = LipschitzDense(6, 4)
    assert torch.equal(operator_matrix(dense), dense.weight.detach().double())


def test_orthogonal_dense_has_norm_one():
    dense = LipschitzDense(30, 30, init="orthogonal")
    dense.converge(tol=1e-7)
    assert dense.lipschitz().item() == pytest.approx(1.0, abs=1e-5)


def test_iterate_is_a_buffer_saved_and_restored():
    conv = LipschitzConv2d(2, 3, 3, 1, (5, 5))
    conv.converge()
    state = conv.state_dict()
    assert "u" in state and "u" not in dict(conv.named_parameters())
    fresh = LipschitzConv2d(2, 3, 3, 1, (5, 5))
    fresh.load_state_dict(state)
    assert fresh.lipschitz().item() == pytest.approx(conv.lipschitz().item(), rel=1e-6)


def test_gradient_flows_through_the_norm_only():
    """d||W u||/dW = (W u / ||W u||) u^T for unit u; the iterate gets no gradient and is not moved."""
    torch.manual_seed(3)
    dense = LipschitzDense(8, 5)
    dense.power_iterate(3)
    u_before = dense.u.clone()
    sigma = dense.lipschitz()
    sigma.backward()
    u = dense.u[0]
    wu = dense.weight.detach() @ u
    assert torch.allclose(dense.weight.grad, torch.outer(wu / wu.norm(), u), atol=1e-6)
    assert not dense.u.requires_grad and dense.u.grad is None
    assert torch.equal(dense.u, u_before)


def test_power_iterate_runs_without_building_a_graph():
    conv = LipschitzConv2d(2, 3, 3, 2, (6, 6))
    before = conv.u.clone()
    conv.power_iterate(2)
    assert not conv.u.requires_grad and not torch.equal(conv.u, before)


@pytest.mark.parametrize("bad", [dict(tol=0.0), dict(tol=1e-5, max_iter=0)])
def test_converge_rejects_bad_arguments(bad):
    with pytest.raises(ValueError, match="converge needs"):
        LipschitzDense(3, 3).converge(**bad)


def test_power_iteration_keeps_a_zero_iterate_at_zero():
    dense = LipschitzDense(3, 2)
    dense.u.zero_()
    dense.power_iterate(3)
    assert torch.equal(dense.u, torch.zeros_like(dense.u))


@pytest.mark.parametrize("c_in,c_out,k,s,size", [(1, 16, 4, 2, (28, 28)), (3, 8, 3, 1, (9, 7)), (4, 6, 4, 3, (10, 11))])
def test_cpu_power_iteration_on_patches_is_the_convolutions(c_in, c_out, k, s, size):
    """The CPU path (matrix products on the iterate's patches) iterates exactly as the convolutions
    do, asymmetric SAME padding (the last case) included."""
    from gloro_repro.gloro.layers import LipschitzLinear, _unit

    fast, reference = (LipschitzConv2d(c_in, c_out, k, s, size, generator=torch.Generator().manual_seed(0))
                       for _ in range(2))
    fast.power_iterate(9)
    weight = reference.weight.detach()
    for _ in range(9):
        reference.u.copy_(_unit(LipschitzLinear.gram_map(reference, reference.u, weight)))
    assert torch.allclose(fast.u, reference.u, atol=1e-6) and not torch.equal(fast.u, torch.zeros_like(fast.u))
    assert (fast.symmetric is None) == (size == (10, 11))
