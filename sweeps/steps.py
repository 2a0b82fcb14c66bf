"""Appendix B's greedy search, step by step: the candidates of each parameter and its tie rule.

Parameters are searched one at a time in the paper's order; each step's winner is fixed for the
steps after it. Candidates are strings (one Optuna categorical per step); ``{epochs}`` in a
schedule stands for the experiment's epoch count at the time the trial runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from gloro_repro.config import Experiment

ORDER = ("eps_schedule", "loss", "epochs", "lr_decay", "warmup", "init", "power_iterations", "batch_size")
KEYS = {"loss": "lam"}  # Appendix B's step name -> the params key it sets (its 'loss' step searches TRADES's lambda)


def key_of(step: str) -> str:
    return KEYS.get(step, step)


@dataclass(frozen=True)
class Budget:
    """How much to spend: epoch counts are multiplied by ``epoch_scale`` (at least 1 epoch)."""

    epoch_scale: float = 1.0
    max_trials: int | None = None

    def epochs(self, paper_epochs: int) -> int:
        return max(1, round(paper_epochs * self.epoch_scale))


def resolve(value: str, experiment: Experiment) -> str:
    """Fill the ``{epochs}`` placeholder of a ramp schedule."""
    return value.replace("{epochs}", str(experiment.training.epochs))


def apply(experiment: Experiment, key: str, value: str) -> Experiment:
    """The experiment with ``key`` set to the candidate ``value`` (validated like params.yaml)."""
    typed = {"epochs": int, "warmup": int, "power_iterations": int, "batch_size": int}.get(key, str)
    changes = {key_of(key): typed(resolve(value, experiment))}
    if key == "epochs":  # ramps that spanned the whole run keep spanning it
        for ramp_key in ("lam", "eps_schedule"):
            parts = str(experiment.value(ramp_key)).split(",")
            if len(parts) == 3 and parts[2] == str(experiment.training.epochs):
                changes[ramp_key] = ",".join(parts[:2] + [str(changes["epochs"])])
    return experiment.with_values(**changes)


def eps_candidates(e: Experiment, budget: Budget) -> list[str]:
    # single < x,y,e < log in complexity; the linear ramp rises from 0 over the first half
    return ["single", f"0.0,{e.training.eps_train},{max(1, e.training.epochs // 2)}", "log"]


def lambda_candidates(e: Experiment, budget: Budget) -> list[str]:
    return [str(float(lam)) for lam in range(1, 11)]


def warmup_candidates(e: Experiment, budget: Budget) -> list[str]:
    return ["0", str(budget.epochs(20))]  # none, or the prior work's 20 epochs (Lee et al., 2020)


def epochs_candidates(e: Experiment, budget: Budget) -> list[str]:
    """The upward sweep; ``GreedySearch`` then tries fewer epochs in steps of 50 (scaled)."""
    return list(dict.fromkeys(str(budget.epochs(n)) for n in range(100, 1001, 100)))


CANDIDATES: dict[str, Callable[[Experiment, Budget], list[str]]] = {
    "eps_schedule": eps_candidates,
    "loss": lambda_candidates,
    "epochs": epochs_candidates,
    "lr_decay": lambda e, b: ["1e-07", "5e-07", "1e-06", "5e-06"],
    "warmup": warmup_candidates,
    "init": lambda e, b: ["default", "orthogonal"],
    "power_iterations": lambda e, b: ["1", "2", "5", "10"],
    "batch_size": lambda e, b: ["128", "256", "512"],
}

# Among candidates tied for the best VRA, the first in this order wins (Appendix B's tie rules:
# the least complex eps schedule, Glorot initialisation, fewer power iterations); other steps
# prefer the candidate tried first (whole lambdas before refinements and ramps).
TIE_ORDER: dict[str, Callable[[str], float]] = {
    "eps_schedule": lambda v: 0 if v == "single" else 2 if v == "log" else 1,
    "epochs": lambda v: int(v),  # not in the paper: on ties, the cheaper run
    "init": lambda v: 0 if v == "default" else 1,
    "power_iterations": lambda v: int(v),
}


def choose(step: str, results: list[tuple[str, float]], tie: float) -> str:
    """The winner among ``(candidate, VRA)`` results: best VRA, ties (within ``tie``) by the step's rule."""
    best = max(vra for _, vra in results)
    tied = [value for value, vra in results if vra >= best - tie]
    rule = TIE_ORDER.get(step)
    return min(tied, key=rule) if rule else tied[0]
