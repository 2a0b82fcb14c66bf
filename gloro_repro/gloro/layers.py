"""Linear layers whose spectral norm is tracked by persistent power iteration.

Each layer is a linear map A (bias excluded, it does not change the Lipschitz constant) and
brings what the bounds need: ``linear_map`` and its adjoint ``adjoint_map`` (power iteration),
``sound_bound`` (a provable norm bound) and ``abs_map`` (|A| v, for the rounding bound). A new
Lipschitz layer is one ``LipschitzLinear`` subclass defining the two maps and ``forward``.

The power-iteration iterate ``u`` is a buffer, so it is saved in the ``state_dict`` and a
checkpoint carries its converged state, with ``converged_for``, the digest of the parameters it
converged for: ``is_converged()`` tells whether the estimate still describes the weights (an
optimiser step or a loaded state_dict since ``converge`` makes it stale). Iterations run without
gradient; ``lipschitz()`` computes ``||A u|| / ||u||`` with the current weights, so the gradient
reaches the weights through that final norm only (as in the paper, Section 3).
"""
from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from .bounds import (
    CIRCULAR_GRIDS,
    EXACT_MAX_ENTRIES,
    EXACT_MAX_SIDE,
    ROUND_UP,
    SOUND_RTOL,
    SoundBound,
    conv_norm_upper_bound,
    operator_matrix,
    rigorous_sigma_max,
)

INITIALISERS = ("default", "orthogonal")
CONVERGE_WINDOW = 32  # iterations between the estimates ``converge`` compares
MATRIX_MAX_ENTRIES = 2 ** 21  # ``converge`` iterates on the materialised matrix up to this size (8 MiB in float32)
DIGEST_BYTES = 32  # sha256
# |fl(I + s W) - (I + s W)| <= KERNEL_ROUNDING (I + |s| |W|) entrywise, in float32 and in float64
# (three roundings of at most 2^-24 relative each, s rounded included)
KERNEL_ROUNDING = 2.0 ** -22


def init_weight_(weight: torch.Tensor, init: str, generator: torch.Generator | None = None) -> None:
    """Initialise a weight in place with the Keras distribution named by ``init``.

    ``default`` is Keras ``GlorotUniform`` (U(-l, l), l = sqrt(6 / (fan_in + fan_out)), with
    fans that count the kernel's receptive field, exactly as ``xavier_uniform_``).
    ``orthogonal`` is Keras ``Orthogonal`` (gain 1): a Haar-random matrix with orthonormal rows
    or columns. Keras flattens a conv kernel as (k*k*C_in, C_out) and torch as
    (C_out, C_in*k*k); the Haar measure is invariant under transposition and permutation of
    entries, so the two give the same distribution.
    """
    if init == "default":
        nn.init.xavier_uniform_(weight, generator=generator)
    elif init == "orthogonal":
        nn.init.orthogonal_(weight, generator=generator)
    else:
        raise ValueError(f"unknown initialisation {init!r}; expected one of {INITIALISERS}")


def _unit(v: torch.Tensor) -> torch.Tensor:
    """v / ||v||; a zero vector stays zero (no epsilon inside the norm, see klasleino/gloro#8).

    Branch-free, so power iteration never waits for the GPU to read the norm back.
    """
    return v / v.norm().clamp_min(torch.finfo(v.dtype).tiny)


def _top_singular_direction(matrix: torch.Tensor) -> torch.Tensor:
    """The top right singular vector of A, given A's matrix transposed (``[n_in, n_out]``), from an
    eigendecomposition on its smaller side: the direction power iteration on ``A^T A`` converges to,
    which it approaches only slowly when the top singular values are close. A start, so float32 will do:
    the iterations after it settle what rounding leaves."""
    m = matrix.detach()
    if m.shape[0] <= m.shape[1]:
        return _unit(torch.linalg.eigh(m @ m.T).eigenvectors[:, -1])
    return _unit(m @ torch.linalg.eigh(m.T @ m).eigenvectors[:, -1])


class LipschitzLinear(nn.Module):
    """Base of the tracked layers: power iteration on ``A^T A`` with a persistent iterate.

    A subclass has a ``weight`` parameter and a ``bias`` (or None), registers its iterate with
    ``_register_iterate`` and defines ``linear_map``, ``adjoint_map`` and ``forward``. The other
    methods assume, as for dense and convolutional maps, that each entry of A's matrix is one
    entry of the weight (or zero); a layer for which that is false overrides them.
    """

    u: torch.Tensor
    bias: torch.Tensor | None

    def _register_iterate(self, shape: tuple[int, ...], generator: torch.Generator | None) -> None:
        self.register_buffer("u", _unit(torch.randn(shape, generator=generator)))
        self.register_buffer("converged_for", torch.zeros(DIGEST_BYTES, dtype=torch.uint8))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before ``converged_for`` existed load as not converged
        state_dict.setdefault(prefix + "converged_for", torch.zeros(DIGEST_BYTES, dtype=torch.uint8))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def weights_digest(self) -> torch.Tensor:
        """sha256 of the layer's parameters (names, dtypes, shapes, bytes) as ``uint8 [32]``."""
        digest = hashlib.sha256()
        for name, value in self.named_parameters():
            flat = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{name}:{flat.dtype}:{tuple(value.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        return torch.frombuffer(bytearray(digest.digest()), dtype=torch.uint8)

    def is_converged(self) -> bool:
        """Whether ``converge`` finished for exactly the current parameters."""
        return torch.equal(self.converged_for.cpu(), self.weights_digest())

    def cached_sound_bound(self) -> SoundBound:
        """``sound_bound()``, recomputed only when the parameters change (it takes seconds on large layers)."""
        digest = bytes(self.weights_digest().tolist())
        cached = getattr(self, "_sound_cache", None)
        if cached is None or cached[0] != digest:
            self._sound_cache = cached = (digest, self.sound_bound())
        return cached[1]

    def linear_map(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """A x without bias, with ``weight`` in place of the layer's own if given. Shape: as ``forward``."""
        raise NotImplementedError

    def adjoint_map(self, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """A^T y, the adjoint of ``linear_map``."""
        raise NotImplementedError

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input (without the batch dimension)."""
        return tuple(self.u.shape[1:])

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one output (without the batch dimension)."""
        meta = torch.empty(1, *self.input_shape, device="meta")
        return tuple(self.linear_map(meta, self.weight.detach().to("meta")).shape[1:])

    @property
    def terms_per_output(self) -> int:
        """The most products summed into one output, bias excluded (for the rounding bound)."""
        return self.weight[0].numel()

    def abs_map(self, v: torch.Tensor, bias: bool = False) -> torch.Tensor:
        """``|A| v`` (plus ``|b|`` with ``bias``): A's matrix taken entrywise in absolute value, on v's
        device and dtype."""
        out = self._abs_linear_map(v)
        if bias and self.bias is not None:
            out = out + self.bias.detach().to(v).abs().view(1, -1, *[1] * (out.dim() - 2))
        return out

    def _abs_linear_map(self, v: torch.Tensor) -> torch.Tensor:
        """``|A| v`` without bias: each entry of A's matrix is one weight entry (or zero)."""
        return self.linear_map(v, self.weight.detach().to(v).abs())

    def materialisable(self) -> bool:
        """Whether the operator is small enough for the near-exact bound (``bounds.EXACT_MAX_*``)."""
        in_dim, out_dim = math.prod(self.input_shape), math.prod(self.output_shape)
        return min(in_dim, out_dim) <= EXACT_MAX_SIDE and in_dim * out_dim <= EXACT_MAX_ENTRIES

    @torch.no_grad()
    def sound_bound(self) -> SoundBound:
        """A provable upper bound on the norm, from the materialised operator (``bounds.rigorous_sigma_max``),
        computed on the CPU in float64 so it is the same on every machine. Layers too large to
        materialise need a bound of their own: override this."""
        if not self.materialisable():
            raise ValueError(f"{self!r}: too large for the near-exact bound and no other provable bound; "
                             f"override sound_bound")
        return SoundBound(rigorous_sigma_max(operator_matrix(self)), "near-exact")

    @torch.no_grad()
    def power_iterate(self, n: int) -> None:
        """Run ``n`` power iterations on A^T A, updating the iterate buffer in place."""
        weight = self.weight.detach()
        u = self.u
        for _ in range(n):
            u = _unit(self.gram_map(u, weight))
        self.u.copy_(u)

    def gram_map(self, u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """A^T A u: one power iteration before normalising."""
        return self.adjoint_map(self.linear_map(u, weight), weight)

    def lipschitz(self) -> torch.Tensor:
        """Power-iteration estimate ``||A u|| / ||u||`` with gradient to the weights only."""
        u = self.u.detach()
        return self.linear_map(u, self.weight).norm() / u.norm()

    @torch.no_grad()
    def converge(self, tol: float = 1e-5, max_iter: int = 100_000) -> int:
        """Iterate until the estimate's remaining rise is at most ``tol`` (relative); return the count.
        Only then is the layer marked converged for its current parameters (``is_converged``).

        The estimate rises monotonically towards the norm, geometrically at the rate
        (sigma_2 / sigma_1)^2 per iteration, which is slow when the top two singular values are
        close: at sigma_2 / sigma_1 = 0.999 one step raises it by 1e-6 while it is still 1e-3
        below. So the rise is measured over windows of ``CONVERGE_WINDOW`` iterations and the
        remaining rise extrapolated geometrically, ``rise * q / (1 - q)`` with q the largest ratio
        of successive rises over the last four windows (the rises can first shrink, then grow,
        while the iterate turns between close singular vectors); a window with no rise means
        the estimate has reached the rounding noise. That test can still stop early when the
        iterate holds almost nothing of the top singular vector (seen: 1.2e-3 below the norm), so a
        layer whose matrix has at most ``MATRIX_MAX_ENTRIES`` entries starts from its top singular
        direction (an eigendecomposition of its Gram matrix), the limit of the iteration.
        The result is an estimate: see ``bounds.py`` for provable upper bounds.
        """
        if not (tol > 0 and max_iter >= 1):
            raise ValueError(f"converge needs tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")
        done, converged = self._iterate_to_convergence(tol, max_iter)
        if converged:
            self.converged_for.copy_(self.weights_digest())
        return done

    @torch.no_grad()
    def _matrix(self) -> torch.Tensor | None:
        """A's matrix transposed (row i: A e_i) where it has at most ``MATRIX_MAX_ENTRIES`` entries, else
        None: ``converge`` then starts from its top singular direction and iterates with two
        matrix-vector products, much cheaper than two batch-1 maps."""
        n = self.u.numel()
        if n * math.prod(self.output_shape) > MATRIX_MAX_ENTRIES:
            return None
        basis = torch.eye(n, dtype=self.u.dtype, device=self.u.device).reshape(n, *self.input_shape)
        return self.linear_map(basis, self.weight.detach()).reshape(n, -1)

    def _iterate_to_convergence(self, tol: float, max_iter: int) -> tuple[int, bool]:
        matrix = self._matrix()
        if matrix is not None:  # start at the limit the iteration converges to; the windows below confirm it
            self.u.copy_(_top_singular_direction(matrix).reshape(self.u.shape))
        sigmas, done = [self.lipschitz().item()], 0
        while done < max_iter:
            step = min(CONVERGE_WINDOW, max_iter - done)
            if matrix is None:
                self.power_iterate(step)
            else:
                u = self.u.reshape(1, -1)
                for _ in range(step):
                    u = _unit((u @ matrix) @ matrix.T)
                self.u.copy_(u.reshape(self.u.shape))
            done += step
            sigmas.append(self.lipschitz().item())
            last = sigmas[-5:]
            rises = [b - a for a, b in zip(last, last[1:])]
            if len(rises) < 4:
                continue
            ratio = max(b / a if a > 0 else math.inf for a, b in zip(rises, rises[1:]))
            remaining = rises[-1] * ratio / (1 - ratio) if ratio < 1 else math.inf
            if rises[-1] <= 0 or remaining <= tol * abs(sigmas[-1]):
                return done, True
        return done, False


class LipschitzDense(LipschitzLinear):
    """Dense layer ``y = x W^T + b`` with a tracked spectral norm of W.

    Shape:
        input ``[N, in_features]``, output ``[N, out_features]``.
    """

    def __init__(self, in_features: int, out_features: int, init: str = "default",
                 generator: torch.Generator | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        init_weight_(self.weight, init, generator)
        self._register_iterate((1, in_features), generator)

    def linear_map(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, self.weight if weight is None else weight)

    def adjoint_map(self, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return y @ (self.weight if weight is None else weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    @torch.no_grad()
    def sound_bound(self) -> SoundBound:
        """The near-exact bound on the weight matrix itself (it is the operator)."""
        return SoundBound(rigorous_sigma_max(self.weight.detach().cpu().double()), "near-exact")

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}"


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME zero padding (before, after) for one spatial axis.

    The output has ``ceil(size / stride)`` positions; an odd total puts the extra zero after.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class LipschitzConv2d(LipschitzLinear):
    """2-D convolution with TF SAME zero padding and any stride, with a tracked spectral norm.

    The norm is that of the whole linear map on a ``[C_in, H, W]`` feature map, padding and
    stride included, so the layer is built for one input size.

    Shape:
        input ``[N, C_in, H, W]``, output ``[N, C_out, ceil(H/stride), ceil(W/stride)]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 input_size: tuple[int, int], init: str = "default",
                 generator: torch.Generator | None = None):
        super().__init__()
        if kernel_size < 1 or stride < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {kernel_size} and {stride}")
        self.stride = stride
        h, w = input_size
        (top, bottom), (left, right) = same_padding(h, kernel_size, stride), same_padding(w, kernel_size, stride)
        self.padding = (left, right, top, bottom)  # F.pad order: last axis first
        # symmetric padding (the usual case) is left to the conv itself, saving a padded copy
        self.symmetric = (top, left) if (top, left) == (bottom, right) else None
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        init_weight_(self.weight, init, generator)
        self._register_iterate((1, in_channels, h, w), generator)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.symmetric is not None:
            return F.conv2d(x, weight, bias, stride=self.stride, padding=self.symmetric)
        return F.conv2d(F.pad(x, self.padding), weight, bias, stride=self.stride)

    def kernel(self, weight: torch.Tensor) -> torch.Tensor:
        """The convolution's kernel given the weight parameter (itself, here)."""
        return weight

    def kernel_magnitude(self, weight: torch.Tensor) -> torch.Tensor:
        """Entrywise at least ``|kernel|`` as any float32 or float64 pass computes it (for ``abs_map``)."""
        return weight.abs()

    def linear_map(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return self._conv(x, self.kernel(self.weight if weight is None else weight))

    def _abs_linear_map(self, v: torch.Tensor) -> torch.Tensor:
        return self._conv(v, self.kernel_magnitude(self.weight.detach().to(v)))

    def adjoint_map(self, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        weight = self.kernel(self.weight if weight is None else weight)
        c, h, w = self.input_shape
        if self.symmetric is not None:
            return torch.nn.grad.conv2d_input((y.shape[0], c, h, w), weight, y, stride=self.stride,
                                              padding=self.symmetric)
        left, right, top, bottom = self.padding
        padded = (y.shape[0], c, h + top + bottom, w + left + right)
        x = torch.nn.grad.conv2d_input(padded, weight, y, stride=self.stride)
        return x[:, :, top:top + h, left:left + w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv(x, self.kernel(self.weight), self.bias)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """``[C_out, ceil(H / stride), ceil(W / stride)]``, by arithmetic: the generic meta-tensor pass imports
        sympy, a third of a second of every stage's start-up."""
        _, h, w = self.input_shape
        return self.weight.shape[0], -(-h // self.stride), -(-w // self.stride)

    def gram_map(self, u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """A^T A u; on the CPU as two matrix products on u's patches (``A u = K cols(u)``,
        ``A^T y = fold(K^T y)``), where oneDNN's convolutions of one image cost 1.6-4.5 times as much."""
        if u.device.type != "cpu":
            return super().gram_map(u, weight)
        kernel = self.kernel(weight)
        matrix, size = kernel.reshape(kernel.shape[0], -1), kernel.shape[-1]
        left, right, top, bottom = self.padding
        _, h, w = self.input_shape
        cols = F.unfold(F.pad(u, self.padding), size, stride=self.stride)
        back = F.fold(matrix.T @ (matrix @ cols), (h + top + bottom, w + left + right), size, stride=self.stride)
        return back[:, :, top:top + h, left:left + w]

    def sound_bound(self) -> SoundBound:
        """Near-exact where the operator can be materialised, else the best circular bound of
        ``CIRCULAR_GRIDS`` grids (``bounds.conv_norm_upper_bound``), widened by ``SOUND_RTOL``."""
        if self.materialisable():
            return super().sound_bound()
        return SoundBound(conv_norm_upper_bound(self, CIRCULAR_GRIDS) * (1 + SOUND_RTOL), "circular")

    def extra_repr(self) -> str:
        c_out, c_in, k, _ = self.weight.shape
        return f"{c_in}, {c_out}, kernel_size={k}, stride={self.stride}, input_size={self.input_shape[1:]}"


class LipschitzResidualConv2d(LipschitzConv2d):
    """A linear residual block ``y = x + scale * conv_W(x) + b`` as one convolution (LiResNet's block):
    its kernel is the identity at the centre tap plus ``scale * W``, so power iteration, the
    provable bound, the rounding bound and the export see one operator, ``I + scale * W``.

    Stride 1, an odd kernel (a centre tap) and as many output channels as input channels. The
    kernel is formed in the working precision; its rounding (``KERNEL_ROUNDING``) is added to the
    provable bound and to ``kernel_magnitude``, so both hold for the float32 and float64 passes.

    Shape:
        input ``[N, C, H, W]``, output ``[N, C, H, W]``.
    """

    def __init__(self, channels: int, kernel_size: int, input_size: tuple[int, int], scale: float = 1.0,
                 init: str = "default", generator: torch.Generator | None = None):
        if kernel_size % 2 == 0:
            raise ValueError(f"a residual conv needs an odd kernel (a centre tap), got kernel_size={kernel_size}")
        super().__init__(channels, channels, kernel_size, 1, input_size, init, generator)
        self.scale = float(scale)
        identity = torch.zeros(channels, channels, kernel_size, kernel_size)
        identity[range(channels), range(channels), kernel_size // 2, kernel_size // 2] = 1
        self.register_buffer("identity", identity, persistent=False)

    def _identity(self, like: torch.Tensor) -> torch.Tensor:
        # converted only when it differs, so an exported program holds no dtype check on it (.double() works)
        same = self.identity.dtype == like.dtype and self.identity.device == like.device
        return self.identity if same else self.identity.to(like)

    def kernel(self, weight: torch.Tensor) -> torch.Tensor:
        return self._identity(weight) + self.scale * weight

    def kernel_magnitude(self, weight: torch.Tensor) -> torch.Tensor:
        return (self._identity(weight) + abs(self.scale) * weight.abs()) * (1 + KERNEL_ROUNDING)

    @torch.no_grad()
    def sound_bound(self) -> SoundBound:
        """The bound of the float64 kernel plus the norm of any pass's kernel rounding, at most
        ``KERNEL_ROUNDING * sqrt(||M||_1 ||M||_inf)`` with M the operator of ``I + |scale| |W|``."""
        bound = super().sound_bound()
        magnitude = self.kernel_magnitude(self.weight.detach().cpu().double())
        rows, columns = magnitude.sum(dim=(1, 2, 3)).max(), magnitude.sum(dim=(0, 2, 3)).max()
        slack = KERNEL_ROUNDING * math.sqrt(float(rows * columns)) * ROUND_UP
        return SoundBound((bound.value + slack) * ROUND_UP, bound.method)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, kernel_size={self.weight.shape[-1]}, scale={self.scale}, " \
               f"input_size={self.input_shape[1:]}"


def tracked_layers(module: nn.Module) -> list[LipschitzLinear]:
    """The tracked linear layers of ``module`` in forward order."""
    return [m for m in module.modules() if isinstance(m, LipschitzLinear)]

