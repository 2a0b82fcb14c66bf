"""GloRo Net: a logit network instrumented with a bottom logit (Leino et al., 2021).

For an input with predicted class j = argmax f(x), the bottom logit is
``y_bot = max_{i != j} f_i(x) + eps * K_ij``, where ``K_ij`` bounds the Lipschitz constant of the
margin ``f_j - f_i`` (Appendix A.2). If ``f_j(x) > y_bot`` no point within L2 distance eps can
change the prediction (Theorem 4), so every non-bottom prediction is certified.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Literal, TypeVar

import torch
from torch import nn

from .bounds import SOUND_RTOL, SoundBound
from .chain import UnboundableNetworkError, activations_lipschitz, network_chain, tracked_chain
from .precision import require_ieee
from .rounding import logit_rounding_bound

Bound = Literal["power", "sound"]
BOUNDS = ("power", "sound")
T = TypeVar("T")


def beside(tasks: list[Callable[[], object]], main: Callable[[], T], device: torch.device) -> T:
    """Run ``tasks`` and ``main``, returning ``main()``, as if the tasks ran first, in order.

    On CUDA each task runs on a side stream of its own, forked from the current stream and joined
    back before returning, so independent chains of small kernels (a layer's power iterations)
    overlap each other and ``main`` instead of queueing one after another; the tasks must not
    touch what ``main`` reads or writes. Elsewhere they run in order, then ``main``.
    """
    if device.type != "cuda":
        for task in tasks:
            task()
        return main()
    current = torch.cuda.current_stream(device)
    streams = [torch.cuda.Stream(device) for _ in tasks]  # from PyTorch's pool: no stream is created per call
    for task, stream in zip(tasks, streams):
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            task()
    result = main()
    for stream in streams:
        current.wait_stream(stream)
    return result


def _iterations(layers: list, n: int) -> list[Callable[[], None]]:
    """Each layer's ``n`` power iterations as a task for ``beside`` (they run without gradient)."""
    return [lambda layer=layer: layer.power_iterate(n) for layer in layers]


def margin_lipschitz(sub_lipschitz: torch.Tensor, last_weight: torch.Tensor) -> torch.Tensor:
    """``K_ij = K_sub * ||w_j - w_i||``: bounds on the margins' Lipschitz constants.

    Shape:
        ``last_weight [m, h]`` -> ``[m, m]``, symmetric with a zero diagonal.
    """
    # cdist's direct mode computes the same row differences without materialising [m, m, h]
    return sub_lipschitz * torch.cdist(last_weight, last_weight, compute_mode="donot_use_mm_for_euclid_dist")


def predicted_class(logits: torch.Tensor) -> torch.Tensor:
    """The index of the largest logit; on ties, the first such index (never several classes)."""
    return logits.argmax(dim=1)


def bottom_logit(logits: torch.Tensor, k_ij: torch.Tensor, eps: float, j: torch.Tensor | None = None) -> torch.Tensor:
    """``y_bot = max_{i != j} (f_i + eps * K_ji)`` with j the predicted class (pass it if known).

    The predicted class j is fixed by index (not by comparing values), so a tie between two
    logits selects one class and yields a bottom logit at least as large as ``f_j``.

    Shape:
        ``logits [N, m]``, ``k_ij [m, m]`` -> ``[N]``.
    """
    j = predicted_class(logits) if j is None else j
    return (logits + eps * k_ij[j]).scatter(1, j[:, None], float("-inf")).amax(dim=1)


def gloro_logits(logits: torch.Tensor, k_ij: torch.Tensor, eps: float) -> torch.Tensor:
    """The GloRo net's m+1 logits ``[f(x), y_bot]``. Shape: ``[N, m]`` -> ``[N, m+1]``."""
    return torch.cat([logits, bottom_logit(logits, k_ij, eps)[:, None]], dim=1)


def gloro_prediction(gloro: torch.Tensor) -> torch.Tensor:
    """Prediction of the GloRo net: the predicted class, or m (bottom) unless it strictly wins.

    A tie between the top class and the bottom logit is a rejection, so certificates are strict.
    """
    m = gloro.shape[1] - 1
    j = predicted_class(gloro[:, :m])
    wins = gloro[:, :m].gather(1, j[:, None])[:, 0] > gloro[:, m]
    return torch.where(wins, j, torch.full_like(j, m))


def certified_radius(logits: torch.Tensor, k_ij: torch.Tensor) -> torch.Tensor:
    """``min_{i != j} (f_j - f_i) / K_ij``: the L2 radius within which the prediction is proven.

    A zero margin gives radius 0 (ties are never certified). Shape: ``[N, m]`` -> ``[N]``.
    """
    j = predicted_class(logits)
    return certified_radius_of_margins(logits.gather(1, j[:, None]) - logits, j, k_ij)


def certified_radius_of_margins(margins: torch.Tensor, j: torch.Tensor, k_ij: torch.Tensor) -> torch.Tensor:
    """``min_{i != j} margin_i / K_ji`` from non-negative margins ``[N, m]`` of the predicted classes ``j``."""
    k = k_ij[j]
    ratio = torch.where(k > 0, margins / k.clamp_min(torch.finfo(k.dtype).tiny),
                        torch.where(margins > 0, torch.inf, 0.0))
    ratio = ratio.scatter(1, j[:, None], torch.inf)
    return ratio.amin(dim=1)


@dataclass(frozen=True)
class Certificate:
    """Per-input result of ``certify``: predicted class, whether it is certified, and radius."""

    prediction: torch.Tensor  # [N] long, the underlying model's class
    certified: torch.Tensor  # [N] bool
    radius: torch.Tensor  # [N] float


def certify_logits(logits: torch.Tensor, k_ij: torch.Tensor, eps: float,
                   rounding: torch.Tensor | None = None) -> Certificate:
    """Certify predictions from logits and margin bounds (the test is ``f_j > y_bot``, strict).

    With ``rounding`` (per-logit bounds on the logits' floating-point error, see ``rounding.py``)
    every margin is first reduced by ``r_i + r_j``, in float64 (where differences of float32 values
    are exact): the test ``f_j - f_i - r_i - r_j > eps K_ji`` and the radius then hold for the exact
    network, not only for the computed logits.

    Shape:
        ``logits [N, m]``, ``k_ij [m, m]``, ``rounding [m]`` or ``[N, m]`` -> ``[N]`` each.
    """
    j = predicted_class(logits)
    if rounding is None:  # the GloRo net's own test, f_j > y_bot, sharing j with the radius
        k_ij = k_ij.to(logits.dtype)
        top = logits.gather(1, j[:, None])
        return Certificate(prediction=j, certified=top[:, 0] > bottom_logit(logits, k_ij, eps, j),
                           radius=certified_radius_of_margins(top - logits, j, k_ij))
    wide, k_ij = logits.double(), k_ij.double()
    rounding = rounding.double().expand_as(wide)
    margins = wide.gather(1, j[:, None]) - wide - rounding - rounding.gather(1, j[:, None])
    beaten = (margins - eps * k_ij[j]).scatter(1, j[:, None], torch.inf).amin(dim=1) > 0
    radius = certified_radius_of_margins(margins.clamp_min(0), j, k_ij)
    return Certificate(prediction=j, certified=beaten, radius=radius)


@torch.no_grad()
def batched_logits(f, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``f(x)`` computed ``batch_size`` inputs at a time, without gradient."""
    return torch.cat([f(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def certify_float64(f: nn.Module, x: torch.Tensor, k_ij: torch.Tensor, eps: float, rounding: torch.Tensor,
                    batch_size: int = 1000) -> Certificate:
    """The provable certificate: a float64 copy of ``f`` on ``x``, margins reduced by ``rounding``
    (per-logit bounds on that float64 pass's rounding error, ``rounding.logit_rounding_bound``).
    On CUDA, run it inside ``precision.ieee_arithmetic()`` (it refuses to run with cuDNN on)."""
    require_ieee(x.device, torch.float64, "the provable float64 certificate")
    return certify_logits(batched_logits(copy.deepcopy(f).double(), x.double(), batch_size), k_ij, eps, rounding)


class StaleIteratesError(RuntimeError):
    """The power-iteration estimate was asked for on iterates not converged for the current weights."""


class GloroNet(nn.Module):
    """Wraps a network of Lipschitz-tracked layers; ``forward`` returns the m+1 GloRo logits.

    f must be a chain the core can bound (``chain.network_chain``); anything else is refused here.
    In training mode each forward first runs ``power_iterations`` iterations on every layer but
    the last (without gradient); the margin bounds are then computed with the current weights so
    the loss's gradient reaches them. Certificates default to the provable bound; the paper's
    power-iteration bound is used only by name and only after ``converge`` for the current weights.
    """

    def __init__(self, f: nn.Module, eps: float, power_iterations: int = 5):
        super().__init__()
        chain = network_chain(f)
        self.f = f
        self.eps = eps
        self.power_iterations = power_iterations
        self.layers = tracked_chain(chain)
        self.activation_lipschitz = activations_lipschitz(chain)

    def chain(self) -> list[nn.Module]:
        """f's validated chain; refuses an f changed since construction into something else."""
        chain = network_chain(self.f)
        if [id(m) for m in tracked_chain(chain)] != [id(m) for m in self.layers] or \
                activations_lipschitz(chain) != self.activation_lipschitz:
            raise UnboundableNetworkError("f's layers changed since this GloroNet was built; build a new GloroNet")
        return chain

    def require_converged(self) -> None:
        """Refuse the power-iteration estimate on iterates that were not converged for these weights."""
        stale = [i for i, layer in enumerate(self.layers) if not layer.is_converged()]
        if stale:
            raise StaleIteratesError(
                f"power-iteration iterates of tracked layers {stale} are not converged for the current weights "
                "(never converged, or the weights changed since); call converge() first, or use the provable "
                "bound (bound='sound')")

    def sub_lipschitz(self) -> torch.Tensor:
        """Product of the power-iteration norms of every layer but the last (and the activations' constants)."""
        sub = torch.full((), self.activation_lipschitz, device=self.layers[-1].weight.device)
        for layer in self.layers[:-1]:
            sub = sub * layer.lipschitz()
        return sub

    def k_ij(self) -> torch.Tensor:
        """Margin bounds from the current power-iteration iterates (differentiable). ``[m, m]``."""
        return margin_lipschitz(self.sub_lipschitz(), self.layers[-1].weight)

    @torch.no_grad()
    def sound_bounds(self) -> list[SoundBound]:
        """Every tracked layer's provable norm bound and its method (its ``sound_bound()``, on the CPU;
        seconds on large layers, so each layer keeps it until its parameters change)."""
        self.chain()
        return [layer.cached_sound_bound() for layer in self.layers]

    @torch.no_grad()
    def k_ij_sound(self, bounds: list[SoundBound] | None = None) -> torch.Tensor:
        """Provable margin bounds in float64 on the CPU, from ``bounds`` (default: ``sound_bounds()``). ``[m, m]``."""
        bounds = (self.sound_bounds() if bounds is None else bounds)[:-1]
        sub = torch.tensor([bound.value for bound in bounds], dtype=torch.float64).prod() * self.activation_lipschitz
        # the last factor covers the float64 rounding of the row-difference norms
        return margin_lipschitz(sub, self.layers[-1].weight.detach().cpu().double()) * (1 + SOUND_RTOL)

    def margin_bounds(self, bound: Bound = "sound") -> torch.Tensor:
        """``k_ij_sound()`` (on the CPU) for the ``sound`` bound; ``k_ij()`` for the ``power`` one, on
        converged iterates only (``require_converged``)."""
        if bound not in BOUNDS:
            raise ValueError(f"unknown bound {bound!r}; expected one of {BOUNDS}")
        if bound == "sound":
            return self.k_ij_sound()
        self.require_converged()
        return self.k_ij()

    @torch.no_grad()
    def layer_product(self, bound: Bound = "power", bounds: list[SoundBound] | None = None) -> float:
        """Upper bound on f's global L2 Lipschitz constant: the product of all layers' norms (the
        provable ones from ``bounds``, default ``sound_bounds()``, for ``bound="sound"``; for ``power``
        the current iterates' estimate, converged or not, as training logs it)."""
        if bound == "sound":
            bounds = self.sound_bounds() if bounds is None else bounds
            product = float(torch.tensor([b.value for b in bounds], dtype=torch.float64).prod()) * (1 + SOUND_RTOL)
        else:
            product = float(torch.stack([layer.lipschitz() for layer in self.layers]).prod())
        return product * self.activation_lipschitz

    @torch.no_grad()
    def power_iterate(self, n: int) -> None:
        """``n`` power iterations on every tracked layer (on CUDA, the layers concurrently)."""
        beside(_iterations(self.layers, n), lambda: None, self.layers[-1].weight.device)

    @torch.no_grad()
    def converge(self, tol: float = 1e-5, max_iter: int = 100_000) -> list[int]:
        """Run every layer's power iteration to convergence; return the iterations each used."""
        return [layer.converge(tol, max_iter) for layer in self.layers]

    def logits_and_bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f's logits ``[N, m]`` and the margin bounds ``[m, m]`` (in training mode after
        ``power_iterations`` iterations), both with their gradient: what every training loss uses.

        The last layer's iterate is not iterated here: ``K_ij`` takes that layer's row differences,
        not its norm (as the authors' library, which tracks the sub-network only). On CUDA the
        iterations run beside the forward pass (``beside``); the results are the same.
        """
        if not (self.training and self.power_iterations):
            return self.f(x), self.k_ij()
        iterations = _iterations(self.layers[:-1], self.power_iterations)
        logits = beside(iterations, lambda: self.f(x), self.layers[-1].weight.device)
        return logits, self.k_ij()

    def forward(self, x: torch.Tensor, eps: float | None = None) -> torch.Tensor:
        """The m+1 GloRo logits at radius ``eps`` (default ``self.eps``). Shape: ``[N, ...]`` -> ``[N, m+1]``."""
        return gloro_logits(*self.logits_and_bounds(x), self.eps if eps is None else eps)

    @torch.no_grad()
    def rounding(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Per-logit bound on the forward pass's rounding error for inputs in [0, 1] (``rounding.py``). ``[m]``."""
        return logit_rounding_bound(self.f, input_shape=self.layers[0].input_shape, dtype=dtype)

    @torch.no_grad()
    def certify(self, x: torch.Tensor, eps: float | None = None, bound: Bound = "sound") -> Certificate:
        """Predict and certify ``x`` at radius ``eps``: with the provable ``sound`` bound and the forward
        pass's rounding error accounted for (default), or with the ``power`` bound as the paper does
        (converged iterates only).

        Certify in float64 by converting the network and ``x`` (``net.double()``, ``x.double()``).
        """
        eps = self.eps if eps is None else eps
        k = self.margin_bounds(bound)  # refuses an unknown bound, a changed f, stale iterates
        if bound == "sound":
            return certify_logits(self.f(x), k.to(x.device), eps, logit_rounding_bound(self.f, x))
        return certify_logits(self.f(x), k, eps)


def clean_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction with ``argmax f(x) == y``, as a 0-dim tensor (no GPU sync: ``float()`` it to read)."""
    return (predicted_class(logits) == labels).float().mean()


def vra(gloro: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Verified-robust accuracy: fraction correctly predicted and certified (bottom never matches). 0-dim."""
    return (gloro_prediction(gloro) == labels).float().mean()


def rejection_rate(gloro: torch.Tensor) -> torch.Tensor:
    """Fraction of inputs on which the GloRo net predicts bottom. 0-dim."""
    return (gloro_prediction(gloro) == gloro.shape[1] - 1).float().mean()
