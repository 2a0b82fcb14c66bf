"""The paper's schedules (Appendix B), parsed once from their strings into typed objects.

All schedules take ``t``, the robust-training epoch (0-based, after warm-up; fractional values
are allowed for per-step updates).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

EPS_FORMS = "'single', 'log', or 'x,y,e' (eps rises linearly from x to y over e epochs)"
LAMBDA_FORMS = "a number (constant), or 'x,y,e' (lambda moves linearly from x to y over e epochs)"
LR_FORMS = "'decay to <lb>', a number <lb>, or 'constant'"


def _ramp(text: str, forms: str, what: str) -> tuple[float, float, float]:
    """Parse ``x,y,e`` (three numbers, e > 0)."""
    parts = text.split(",")
    try:
        x, y, e = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"bad {what} schedule {text!r}; expected {forms}") from None
    if not e > 0 or not all(map(math.isfinite, (x, y, e))):
        raise ValueError(f"bad {what} schedule {text!r}: e must be a positive epoch count; expected {forms}")
    return x, y, e


@dataclass(frozen=True)
class EpsSchedule:
    """Training radius per epoch: ``single``, linear ``x,y,e``, or ``log`` (to eps at epochs/2)."""

    kind: str  # "single" | "linear" | "log"
    eps_train: float
    epochs: int
    start: float = 0.0
    end: float = 0.0
    ramp_epochs: float = 0.0

    @classmethod
    def parse(cls, text: str, eps_train: float, epochs: int) -> EpsSchedule:
        if not (eps_train > 0 and epochs >= 1):
            raise ValueError(f"eps schedule needs eps_train > 0 and epochs >= 1, got {eps_train}, {epochs}")
        text = str(text).strip()
        if text in ("single", "log"):
            return cls(text, eps_train, epochs)
        if "," in text:
            x, y, e = _ramp(text, EPS_FORMS, "eps")
            return cls("linear", eps_train, epochs, x, y, e)
        raise ValueError(f"bad eps schedule {text!r}; expected {EPS_FORMS}")

    def __call__(self, t: float) -> float:
        if self.kind == "linear" and t <= self.ramp_epochs:
            return self.start + (self.end - self.start) * t / self.ramp_epochs
        half = self.epochs / 2
        if self.kind == "log" and t <= half:
            # the reference code: runs from 0.01 * eps_train at t = 0 to eps_train at t = epochs/2
            e01 = math.exp(0.01)
            return self.eps_train * math.log((math.e - e01) * t / half + e01)
        return self.eps_train


@dataclass(frozen=True)
class LambdaSchedule:
    """TRADES lambda: constant, or ``x + (y-x) t/e`` for ``t < e`` and ``y`` after."""

    start: float
    end: float
    ramp_epochs: float = 0.0

    @classmethod
    def parse(cls, text: str | float) -> LambdaSchedule:
        text = str(text).strip()
        if "," in text:
            return cls(*_ramp(text, LAMBDA_FORMS, "TRADES lambda"))
        try:
            lam = float(text)
        except ValueError:
            raise ValueError(f"bad TRADES lambda {text!r}; expected {LAMBDA_FORMS}") from None
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"bad TRADES lambda {text!r}: must be a finite number >= 0")
        return cls(lam, lam)

    def __call__(self, t: float) -> float:
        if t < self.ramp_epochs:
            return self.start + (self.end - self.start) * t / self.ramp_epochs
        return self.end


@dataclass(frozen=True)
class LRSchedule:
    """``decay to lb``: ``init_lr`` for the first epochs/2, then exponential decay reaching
    ``lower_bound`` at the last epoch (t = epochs - 1). ``lower_bound`` None: constant."""

    init_lr: float
    epochs: int
    lower_bound: float | None = None

    @classmethod
    def parse(cls, text: str | float | None, init_lr: float, epochs: int) -> LRSchedule:
        if not (init_lr > 0 and epochs >= 1):
            raise ValueError(f"LR schedule needs init_lr > 0 and epochs >= 1, got {init_lr}, {epochs}")
        text = "constant" if text is None else str(text).strip()
        if text == "constant":
            return cls(init_lr, epochs)
        number = text.removeprefix("decay to").strip()
        try:
            lb = float(number)
        except ValueError:
            raise ValueError(f"bad LR schedule {text!r}; expected {LR_FORMS}") from None
        if not 0 < lb <= init_lr:
            raise ValueError(f"bad LR schedule {text!r}: the lower bound must be in (0, init_lr={init_lr}]")
        return cls(init_lr, epochs, lb)

    def __call__(self, t: float) -> float:
        half, last = self.epochs / 2, self.epochs - 1
        if self.lower_bound is None or t <= half:
            return self.init_lr
        progress = 1.0 if last <= half else min((t - half) / (last - half), 1.0)
        return self.init_lr * (self.lower_bound / self.init_lr) ** progress


@dataclass(frozen=True)
class EpochSettings:
    """What one epoch trains with: ``robust`` False during warm-up (plain CE, no bottom logit)."""

    robust: bool
    eps: float
    lam: float
    lr: float


@dataclass(frozen=True)
class TrainingSchedule:
    """Warm-up epochs of ordinary training (Lee et al., 2020), then the robust schedules.

    The robust schedules run over ``epochs`` epochs counted after the warm-up, so training
    lasts ``warmup + epochs`` epochs in all.
    """

    warmup: int
    eps: EpsSchedule
    lam: LambdaSchedule
    lr: LRSchedule

    def __post_init__(self):
        if self.warmup < 0:
            raise ValueError(f"warm-up must be >= 0 epochs, got {self.warmup}")

    @property
    def total_epochs(self) -> int:
        return self.warmup + self.eps.epochs

    def at(self, epoch: float) -> EpochSettings:
        """Settings at absolute epoch ``epoch`` (0-based, warm-up included)."""
        if epoch < self.warmup:
            return EpochSettings(False, 0.0, 0.0, self.lr.init_lr)
        t = epoch - self.warmup
        return EpochSettings(True, self.eps(t), self.lam(t), self.lr(t))
