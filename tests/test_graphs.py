"""CUDA graphs of the training step and of certification: the same results as the eager code.

Off CUDA the graphed objects run eagerly (tested here on every machine); the CUDA-marked tests
compare replayed graphs with the eager step on a GPU, across batch shapes, recaptures and a
Lightning training run.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PARAMS

from gloro_repro.config import load_params
from gloro_repro.data.arrays import DatasetArrays
from gloro_repro.exported import ExportedModel
from gloro_repro.gloro import GloroNet, build_network, float32_precision, ieee_arithmetic, step_loss
from gloro_repro.gloro.graphs import GraphedFunction, GraphedStep
from gloro_repro.gloro.model import certify_float64
from gloro_repro.hardware import Hardware, HardwareError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
ROOT = Path(__file__).resolve().parents[1]


def _net(device: str = "cpu", seed: int = 0) -> GloroNet:
    f = build_network("2C2F", (1, 28, 28), 10, "minmax", "default", seed=seed)
    return GloroNet(f, eps=0.3).to(device).train()


def _batches(device: str, sizes: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(n, 1, 28, 28, generator=g).to(device), torch.randint(10, (n,), generator=g).to(device))
            for n in sizes]


def _train(net: GloroNet, batches, schedule, graphs: bool, tensors: bool = False) -> GraphedStep:
    """Adam steps over ``batches`` with (eps, lambda) from ``schedule`` per batch, graphed or eager;
    eps and lambda are baked into the graph (a recapture when they change) or, with ``tensors``,
    read from device tensors (one graph per shape and mode)."""
    device = net.layers[0].weight.device
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7, fused=device.type == "cuda" or None)
    step = GraphedStep(net, enabled=graphs)
    eps_t, lam_t = torch.zeros((), device=device), torch.zeros((), device=device)
    for (x, y), (eps, lam) in zip(batches, schedule):
        if tensors:
            eps_t.fill_(eps or 0.0)
            lam_t.fill_(lam)
            loss_of = lambda x, y: {"loss": step_loss(net, x, y, None if eps is None else eps_t, lam_t).loss}
            key = eps is None
        else:
            loss_of, key = (lambda x, y: {"loss": step_loss(net, x, y, eps, lam).loss}), (eps, lam)
        step(x, y, loss_of, key=key)
        optimiser.step()
    return step


def _assert_same_training(a: GloroNet, b: GloroNet, rtol: float) -> None:
    """Weights within ``rtol``, and the power-iteration estimates (the iterates themselves may turn
    within the top singular space when two singular values are close)."""
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=rtol, atol=1e-6)
    with torch.no_grad():
        for layer_a, layer_b in zip(a.layers, b.layers):
            torch.testing.assert_close(layer_b.lipschitz(), layer_a.lipschitz(), rtol=rtol, atol=0)


def test_graphed_step_off_cuda_is_the_eager_step():
    net, (x, y) = _net(), _batches("cpu", (32,))[0]
    reference = copy.deepcopy(net)
    step = GraphedStep(net)
    out = step(x, y, lambda x, y: {"loss": step_loss(net, x, y, 0.3, 1.0).loss})
    loss = step_loss(reference, x, y, 0.3, 1.0).loss
    loss.backward()
    assert step.captures == 0 and torch.equal(out["loss"], loss.detach())
    for p, q in zip(net.parameters(), reference.parameters()):
        assert torch.equal(p.grad, q.grad)
    for name, buffer in net.state_dict().items():
        assert torch.equal(buffer, reference.state_dict()[name]), name


def test_graphed_function_off_cuda_calls_the_function():
    calls = []
    fn = GraphedFunction(lambda x: calls.append(1) or {"y": 2 * x})
    assert torch.equal(fn(torch.ones(3))["y"], torch.full((3,), 2.0)) and calls == [1] and fn.captures == 0


def test_certify_in_batches_matches_one_batch():
    net = _net().eval()
    net.converge(1e-6)
    model = ExportedModel.of(net)
    x = torch.rand(23, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    for bound in ("power", "sound"):
        whole, pieces = model.certify(x, bound=bound), model.certify(x, bound=bound, batch_size=5, graphs=False)
        assert torch.equal(whole.certified, pieces.certified) and torch.equal(whole.prediction, pieces.prediction)
        torch.testing.assert_close(pieces.radius, whole.radius, rtol=1e-5, atol=0)  # float32 sums by batch size


def test_cuda_graphs_switch():
    assert Hardware.from_env({}).cuda_graphs and Hardware.from_env({}).one_device().cuda_graphs
    assert not Hardware.from_env({"GLORO_CUDA_GRAPHS": "0"}).one_device().cuda_graphs
    with pytest.raises(HardwareError, match=r"GLORO_CUDA_GRAPHS='yes': expected 1 .* or 0"):
        Hardware.from_env({"GLORO_CUDA_GRAPHS": "yes"})


@pytest.fixture
def deterministic_cudnn():
    """cuDNN's deterministic algorithms: without them two eager runs already differ in the last bits,
    which would hide what graphs or streams change."""
    saved = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    yield
    torch.backends.cudnn.deterministic = saved


# a full batch shape, a short last batch, eps and lambda changing "per epoch" (recaptures)
SIZES = (64, 64, 40, 64, 64, 40, 64, 40)
SCHEDULE = [(0.1, 0.5)] * 3 + [(0.2, 1.0)] * 3 + [(None, 0.0)] + [(0.3, 1.5)]


@cuda
def test_graphed_training_matches_eager_on_cuda(deterministic_cudnn):
    batches = _batches("cuda", SIZES)
    eager = _net("cuda")
    _train(eager, batches, SCHEDULE, graphs=False)
    for tensors, captures in ((False, 6), (True, 3)):  # per (shape, key) change; per shape and mode
        graphed = _net("cuda")
        step = _train(graphed, batches, SCHEDULE, graphs=True, tensors=tensors)
        assert step.captures == captures
        _assert_same_training(eager, graphed, rtol=1e-4)


@cuda
def test_power_iteration_beside_the_forward_pass_matches_one_stream_on_cuda(deterministic_cudnn):
    """On CUDA each layer iterates on a side stream, beside the forward pass: the same kernels on the
    same data as one stream, so the iterates, logits and bounds are bit for bit the same."""
    net, x = _net("cuda"), _batches("cuda", (64,))[0][0]
    reference = copy.deepcopy(net)
    logits, k_ij = net.logits_and_bounds(x)
    for layer in reference.layers[:-1]:
        layer.power_iterate(net.power_iterations)
    assert torch.equal(logits, reference.f(x)) and torch.equal(k_ij, reference.k_ij())
    assert all(torch.equal(a.u, b.u) for a, b in zip(net.layers, reference.layers))
    net.power_iterate(7)  # every layer, each on its own stream
    for layer in reference.layers:
        layer.power_iterate(7)
    assert all(torch.equal(a.u, b.u) for a, b in zip(net.layers, reference.layers))


@cuda
def test_memory_stays_flat_over_steps_and_schedule_changes_on_cuda():
    net = _net("cuda")
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7, fused=True)
    step, eps, lam = GraphedStep(net), torch.zeros((), device="cuda"), torch.ones((), device="cuda")
    reserved = []
    for i, (x, y) in enumerate(_batches("cuda", (64,) * 12)):
        eps.fill_(0.1 + 0.01 * i)  # the schedule moves every step; the same graph serves them all
        step(x, y, lambda x, y: {"loss": step_loss(net, x, y, eps, lam).loss}, key=True)
        optimiser.step()
        torch.cuda.synchronize()
        reserved.append(torch.cuda.memory_reserved())
    assert step.captures == 1
    assert max(reserved[2:]) <= reserved[1] * 1.05 + 2 ** 21, [r // 2 ** 20 for r in reserved]


@cuda
def test_graphed_certification_matches_eager_on_cuda():
    net = _net("cuda").eval()
    net.converge(1e-6)
    model = ExportedModel.of(net).to("cuda")
    x = torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(3)).cuda()
    for bound in ("power", "sound"):
        eager, graphed = model.certify(x, bound=bound, batch_size=128, graphs=False), \
            model.certify(x, bound=bound, batch_size=128)
        again = model.certify(x.flip(0), bound=bound, batch_size=128)  # replayed on new data
        assert torch.equal(eager.certified, graphed.certified) and torch.equal(eager.prediction, graphed.prediction)
        torch.testing.assert_close(graphed.radius, eager.radius, rtol=1e-5, atol=0)
        assert torch.equal(again.certified, graphed.certified.flip(0))
    assert model.cache[("power", model.eps, True)].captures == 2  # batches of 128 and the last 44
    with ieee_arithmetic():  # torch's own float64 convolutions, one image at a time
        native = certify_float64(net.f, x, model.k_sound, model.eps, model.rounding_float64)
    assert torch.equal(native.certified, graphed.certified)
    torch.testing.assert_close(graphed.radius, native.radius, rtol=1e-10, atol=0)  # sums in another order


@cuda
def test_lightning_training_with_graphs_matches_eager_on_cuda(tmp_path, deterministic_cudnn):
    from gloro_repro.lit.module import GloroModule
    from gloro_repro.training import build_trainer, datamodule_for

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    experiment = load_params(PARAMS).experiments["mnist_2c2f_minmax"].with_values(warmup=1)
    experiment = experiment.with_values(epochs=2)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(1100, 1, 28, 28), dtype=np.uint8)  # two batches of 512 and one of 76
    y = rng.integers(0, 10, size=1100).astype(np.int64)
    DatasetArrays(x, y, x[:8], y[:8], classes=[str(c) for c in range(10)]).save(tmp_path, experiment.data.dataset)
    nets = []
    for graphs in (False, False, True):
        torch.manual_seed(0)
        module = GloroModule(experiment.trained_settings(), [1, 28, 28], 10, cuda_graphs=graphs)
        trainer = build_trainer(3, False, Hardware("cuda", cuda_graphs=graphs), experiment.training.batch_size,
                                limit_val_batches=0, enable_checkpointing=False, progress=False)
        with float32_precision("ieee"):  # as the pipeline trains these rows (tf32: false)
            trainer.fit(module, datamodule_for(experiment, tmp_path))
        nets.append(module.net)
        assert module.graph_captures == (4 if graphs else 0)  # full and short batch, warm-up and robust
    spread = max(float(((p - q).abs() / q.abs().clamp_min(1e-6)).max().detach())
                 for p, q in zip(nets[0].parameters(), nets[1].parameters()))
    gap = max(float(((p - q).abs() / q.abs().clamp_min(1e-6)).max().detach())
              for p, q in zip(nets[2].parameters(), nets[0].parameters()))
    print(f"eager vs eager: {spread:.2e}; graphed vs eager: {gap:.2e} (largest relative weight difference)")
    _assert_same_training(nets[0], nets[2], rtol=1e-4)


@pytest.mark.parametrize("stride,padding,size", [(1, 1, 9), (2, 1, 9), (2, 0, 8), (1, 0, 5)])
def test_float64_convolution_as_one_gemm_matches_torch(stride, padding, size):
    from gloro_repro.gloro.gemm_conv import gemm_convolutions
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 4, size, size, generator=g, dtype=torch.float64)
    conv = torch.nn.Conv2d(4, 6, 3, stride=stride, padding=padding).double()
    with torch.no_grad():
        reference = conv(x)
        with gemm_convolutions(devices=("cpu",)):
            ours = conv(x)
            assert conv.float()(x.float()).dtype == torch.float32  # other dtypes pass through
        conv.double()
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
