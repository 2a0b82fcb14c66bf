"""``results/search_<experiment>.{md,csv}``: per step, the values tried with their VRA, the chosen
value, the value params.yaml started from, and the paper's (Tables B.1/B.2)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from gloro_repro import paper
from gloro_repro.config import Experiment
from gloro_repro.tables import write_table

from .steps import Budget, key_of


def paper_value(experiment: Experiment, step: str) -> str:
    row = paper.HYPERPARAMETERS.get(experiment.name)
    return "-" if row is None else str(row[step])


def search_table(experiment: Experiment, results) -> pd.DataFrame:
    records = []
    for result in results:
        tried = ", ".join(f"{value}: {'failed' if vra is None else f'{100 * vra:.1f}'}"
                          + (" (pruned)" if state == "pruned" else "") for value, vra, state in result.tried)
        records.append({"step": result.step, "tried (value: val VRA %)": tried or result.note,
                        "chosen": result.chosen if result.chosen is not None else "-",
                        "params.yaml": str(experiment.value(key_of(result.step))),
                        "paper": paper_value(experiment, result.step)})
    return pd.DataFrame(records)


def write_report(experiment: Experiment, results, out: Path, budget: Budget, seconds: float, trials: int) -> None:
    notes = (f"Greedy search in the paper's order; objective: best VRA on the validation split. Epoch counts "
             f"scaled by {budget.epoch_scale} (the search trains {budget.epochs(experiment.training.epochs)} epochs "
             f"where params.yaml says {experiment.training.epochs}); trial cap: {budget.max_trials}. "
             "Wall time of the last run: "
             f"{seconds:.0f} s for {trials} new trial(s). `{{epochs}}` in a ramp is the epoch count of the run.")
    write_table(search_table(experiment, results), Path(out), f"search_{experiment.name}",
                f"Greedy hyperparameter search: {experiment.name}", notes)
