"""The workloads the benchmarks time, each beside its baseline on the same network and batch.

Networks are the paper's architectures with MinMax activations, Glorot initialisation (a
spread-out spectrum, so power iteration has work to do to converge) and 5 power iterations per
training step, on random inputs in [0, 1] of the datasets' shapes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gloro_repro.exported import ExportedModel
from gloro_repro.gloro import GloroNet, build_network, float32_precision, step_loss
from gloro_repro.gloro.graphs import GraphedFunction, GraphedStep
from gloro_repro.measure import MB, cuda_peak_mb_per_instance, saved_for_backward

# architecture -> (input shape of its dataset, classes)
ARCHITECTURES = {
    "2C2F": ((1, 28, 28), 10),   # MNIST
    "4C3F": ((1, 28, 28), 10),   # MNIST
    "6C2F": ((3, 32, 32), 10),   # CIFAR-10
    "8C2F": ((3, 64, 64), 200),  # Tiny-ImageNet
}
TRADES_LAMBDA = 1.5
EPS = 0.3
CONVERGE_TOL = 1e-5  # the pipeline's default (params.yaml, training.converge_tol)


def network(architecture: str, input_shape: tuple[int, int, int], classes: int, device: torch.device,
            power_iterations: int = 5) -> GloroNet:
    f = build_network(architecture, input_shape, classes, "minmax", "default", seed=0)
    return GloroNet(f, eps=EPS, power_iterations=power_iterations).to(device)


@dataclass
class Workload:
    """One network with a batch and an optimiser; its methods are the timed calls."""

    net: GloroNet
    x: torch.Tensor
    y: torch.Tensor

    @classmethod
    def build(cls, architecture: str, batch_size: int, device: torch.device,
              input_shape: tuple[int, int, int] | None = None) -> Workload:
        shape, classes = ARCHITECTURES[architecture]
        shape = input_shape or shape
        g = torch.Generator().manual_seed(0)
        x = torch.rand(batch_size, *shape, generator=g).to(device)
        y = torch.randint(classes, (batch_size,), generator=g).to(device)
        return cls(network(architecture, shape, classes, device), x, y)

    def __post_init__(self):
        # as the pipeline's module: Adam with Keras's epsilon, fused on CUDA
        fused = self.x.device.type == "cuda" or None
        self.optimiser = torch.optim.Adam(self.net.parameters(), lr=1e-3, eps=1e-7, fused=fused)
        self._exported = None
        # one GraphedStep per loss: each holds one graph per batch shape
        self._graphed = {"plain": GraphedStep(self.net), "gloro": GraphedStep(self.net)}
        self._graphed_inference = GraphedFunction(lambda x: {"logits": self.net.f(x)})

    def _step(self, loss: torch.Tensor) -> None:
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()

    def plain_loss(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        return step_loss(self.net, self.x if x is None else x, self.y if y is None else y, None).loss

    def gloro_loss(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        return step_loss(self.net, self.x if x is None else x, self.y if y is None else y, EPS, TRADES_LAMBDA).loss

    def plain_step(self) -> None:
        """Standard training: cross-entropy on f, backward, Adam."""
        self.net.train()
        self._step(self.plain_loss())

    def gloro_step(self) -> None:
        """GloRo training: power iteration, the m+1 logits, TRADES, backward through K, Adam."""
        self.net.train()
        self._step(self.gloro_loss())

    def graphed_step(self, loss: str) -> None:
        """``plain_step`` or ``gloro_step`` with forward and backward replayed from a CUDA graph (eager on a CPU)."""
        self.net.train()
        loss_of = self.plain_loss if loss == "plain" else self.gloro_loss
        self._graphed[loss](self.x, self.y, lambda x, y: {"loss": loss_of(x, y)})
        self.optimiser.step()

    def power_iteration(self) -> None:
        self.net.power_iterate(self.net.power_iterations)

    @torch.no_grad()
    def inference(self) -> torch.Tensor:
        """Plain inference in IEEE float32, the arithmetic certification runs in (with cuDNN's default
        TF32 convolutions the baseline would time other arithmetic than the certificate's)."""
        self.net.eval()
        with float32_precision("ieee"):
            return self.net.f(self.x)

    def graphed_inference(self) -> torch.Tensor:
        """``inference`` replayed from a CUDA graph (eager on a CPU)."""
        self.net.eval()
        with float32_precision("ieee"):
            return self._graphed_inference(self.x)["logits"]

    def certifier(self, bound: str = "power", graphs: bool = False):
        """Certification as the pipeline runs it: the bounds computed once, after training (the
        exported ``lipschitz.json``); each call is then one forward pass and the margin test."""
        self.net.eval()
        # converging and the provable layer bounds take seconds on 8C2F and the timings do not depend
        # on the bounds' values (later training steps move the weights a little): once per workload
        if self._exported is None:
            self.net.converge(CONVERGE_TOL)
            self._exported = ExportedModel.of(self.net).to(self.x.device)
        return lambda: self._exported.certify(self.x, bound=bound, graphs=graphs)

    def training_mb_per_instance(self, loss_of) -> float:
        """Appendix E per-instance memory of one training step (see ``gloro_repro.measure``)."""
        self.net.train()
        if self.x.device.type == "cuda":
            return cuda_peak_mb_per_instance(lambda: self._step(loss_of()), len(self.x), self.x.device)
        with saved_for_backward() as saved:
            loss = loss_of()
        self.optimiser.zero_grad(set_to_none=True)
        del loss
        return sum(saved.values()) / len(self.x) / MB
