"""Reduced-precision guards: the provable path refuses TF32-like modes, the stages turn them off,
and (on a CUDA machine) the accelerator gives the CPU's certificates."""
from __future__ import annotations

import pytest
import torch

from gloro_repro.evaluation import AttackSettings, certify_test_set
from gloro_repro.exported import ExportedModel
from gloro_repro.gloro import GloroNet, ReducedPrecisionError, build_network, float32_precision, ieee_arithmetic
from gloro_repro.gloro.model import certify_float64
from gloro_repro.gloro.precision import reduced_precision_flags

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _net(seed: int = 0) -> GloroNet:
    f = build_network("2C2F", (1, 28, 28), 10, "minmax", "orthogonal", seed=seed)
    net = GloroNet(f, eps=0.3).eval()
    net.converge(1e-6)
    return net


@pytest.fixture
def tf32_everywhere():
    """torch's documented switch for TF32 matmuls (and oneDNN's on CPUs), undone afterwards."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    yield
    torch.set_float32_matmul_precision(before)


def test_float32_provable_certificate_refuses_reduced_precision(tf32_everywhere):
    net, x = _net(), torch.rand(8, 1, 28, 28)
    assert "torch.backends.mkldnn.matmul=tf32" in reduced_precision_flags("cpu")
    with pytest.raises(ReducedPrecisionError, match=r"mkldnn\.matmul=tf32.*ieee_arithmetic"):
        net.certify(x, bound="sound")
    with ieee_arithmetic():
        assert reduced_precision_flags() == [] and not torch.backends.cudnn.enabled
        assert net.certify(x, bound="sound").certified.dtype == torch.bool
    assert "torch.backends.mkldnn.matmul=tf32" in reduced_precision_flags("cpu"), "the user's setting is restored"
    assert torch.backends.cudnn.enabled
    # float64 does not depend on the float32 modes: on the CPU it runs, and agrees, under the TF32 setting
    k, rounding = net.k_ij_sound(), net.rounding(torch.float64)
    with ieee_arithmetic():
        reference = certify_float64(net.f, x, k, 0.3, rounding)
    assert torch.equal(certify_float64(net.f, x, k, 0.3, rounding).radius, reference.radius)


def test_float32_precision_sets_and_restores_every_backend():
    before = reduced_precision_flags()
    with float32_precision("tf32"):
        assert {"torch.backends.cuda.matmul=tf32", "torch.backends.mkldnn.conv=tf32"} <= set(reduced_precision_flags())
    assert reduced_precision_flags() == before
    with pytest.raises(ValueError, match="'bf16'; expected one of"):
        with float32_precision("bf16"):
            pass


def test_certification_turns_reduced_precision_off_itself(tf32_everywhere):
    """A user who set TF32 globally still gets the IEEE certificates: the evaluation sets it per call."""
    net, x = _net(), torch.rand(64, 1, 28, 28)
    y = net.f(x).argmax(1)
    metrics = certify_test_set(ExportedModel.of(net), x, y, AttackSettings(steps=2, restarts=1))
    assert metrics["device"] == "cpu" and metrics["clean"] == 1.0


@cuda
def test_cuda_certificates_match_the_cpu():
    net, x = _net(), torch.rand(256, 1, 28, 28)
    y = torch.randint(10, (256,))
    model = ExportedModel.of(net)
    cpu = certify_test_set(model, x, y, AttackSettings(steps=5, restarts=1))
    device = torch.device("cuda")
    gpu = certify_test_set(model.to(device), x.to(device), y.to(device), AttackSettings(steps=5, restarts=1))
    assert gpu["device"].startswith("cuda")
    assert gpu["certified_sound"] == cpu["certified_sound"] and abs(gpu["certified"] - cpu["certified"]) <= 1
    assert gpu["theorem4_certified_broken"] == gpu["theorem4_certified_broken_sound"] == 0


@cuda
def test_cuda_provable_path_refuses_cudnn_and_tf32():
    net, x = _net().cuda(), torch.rand(8, 1, 28, 28, device="cuda")
    with pytest.raises(ReducedPrecisionError, match="cudnn"):
        net.certify(x, bound="sound")
    with ieee_arithmetic():
        exact = net.f.double()(x.double())
        assert (net.f.float()(x) - exact).abs().max() <= 1e-4 * exact.abs().max()  # IEEE float32, not TF32
        net.certify(x, bound="sound")


@cuda
def test_provable_bounds_of_a_cuda_net_are_computed_on_the_cpu():
    """The same provable bounds and rounding bound whichever device holds the network."""
    net = _net()
    cpu = [b.value for b in net.sound_bounds()], net.k_ij_sound(), net.rounding(torch.float64)
    net.cuda()
    gpu = [b.value for b in net.sound_bounds()], net.k_ij_sound(), net.rounding(torch.float64)
    assert cpu[0] == gpu[0] and torch.equal(cpu[1], gpu[1]) and torch.equal(cpu[2], gpu[2])
    assert gpu[1].device.type == gpu[2].device.type == "cpu"
