"""The results tables (pandas) and figure (matplotlib): ours beside the paper's, with the gap.

Our numbers come only from the stage outputs under ``results/``; the paper's only from
``gloro_repro.paper``. A row we have not run says "not run" in our columns.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from gloro_repro import paper
from gloro_repro.config import Experiment, Params
from gloro_repro.gloro.losses import LOSSES
from gloro_repro.io import atomic_open, write_json

NOT_RUN = "not run"
METHOD_MARKS = {"near-exact": "", "circular": "c"}  # how D.1c marks each layer's provable bound
DATASETS = {"digits": "digits", "mnist": "MNIST", "mnist_t10k": "MNIST t10k proxy", "cifar10": "CIFAR-10",
            "tinyimagenet": "Tiny-ImageNet"}
STAGE_OUTPUTS = ("training", "certification", "lower_bounds")
B_COLUMNS = ("dataset", "architecture", "augmentation", "warmup", "batch_size", "epochs", "eps_train", "eps_test",
             "init", "init_lr", "lr_decay", "loss", "eps_schedule", "power_iterations")


def model_label(e: Experiment) -> str:
    if not e.robust:
        return "Standard"
    if e.model.activation == "minmax":  # the paper's MinMax rows all train with TRADES
        return "MinMax GloRo" if e.training.loss == "trades" else f"MinMax GloRo ({LOSSES[e.training.loss].label})"
    return f"ReLU GloRo ({LOSSES[e.training.loss].label})"


def paper_loss(e: Experiment) -> str:
    """The loss as the paper's tables write it: CE, or the TRADES lambda; another loss by its label."""
    if e.training.loss == "trades":
        return e.training.lam
    return LOSSES[e.training.loss].label


def setting_label(e: Experiment) -> str:
    eps = "36/255" if math.isclose(e.eps_test, 0.141) else f"{e.eps_test:g}"
    return f"{DATASETS.get(e.data.dataset, e.data.dataset)} ({eps})"


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


HEADLINE = ("clean", "pgd", "vra", "vra_sound", "lipschitz_global_ub", "lipschitz_global_lb", "epochs", "sec_per_epoch",
            "theorem4_certified_broken")  # results/headline/<experiment>.json: DVC's metrics, one short row each


def collect_metrics(results: Path, params: Params) -> dict[str, dict]:
    """Per experiment with a certification result: the metrics contract in README (fractions in [0, 1])."""
    metrics = {}
    for name, e in params.experiments.items():
        training, cert, bounds = (_read(results / stage / f"{name}.json") for stage in STAGE_OUTPUTS)
        if cert is None:
            continue
        training, bounds = training or {}, bounds or {}
        metrics[name] = {
            "experiment": name, "dataset": e.data.dataset, "model": model_label(e), "eps": e.eps_test,
            "clean": cert["clean"], "pgd": cert["pgd"], "vra": cert["vra"], "vra_sound": cert["vra_sound"],
            "rejection": cert["rejection"], "selected_epoch": cert["epoch"],
            "last": {k: cert["last"][k] for k in ("clean", "pgd", "vra", "vra_sound", "epoch")},
            "epochs": training.get("epochs"), "sec_per_epoch": training.get("sec_per_epoch"),
            "mem_mb_per_instance": training.get("mem_mb_per_instance"),
            "cert_seconds": cert["cert_seconds"], "cert_mem_mb_per_instance": cert["cert_mem_mb_per_instance"],
            "lipschitz_global_ub": cert["lipschitz_global_ub"],
            "lipschitz_global_ub_sound": cert["lipschitz_global_ub_sound"],
            "layer_bounds": cert.get("layer_bounds"),
            "lipschitz_global_lb": bounds.get("lipschitz_global_lb"),
            "lipschitz_local_lb": bounds.get("lipschitz_local_lb"),
            "lower_bound_budget": bounds.get("budget"),
            "theorem4_certified_broken": cert["theorem4_certified_broken"],
            "theorem4_certified_broken_sound": cert["theorem4_certified_broken_sound"],
            "lemma1_violations": cert["lemma1_violations"], "theorem2_violations": cert["theorem2_violations"],
            "attack": cert["attack"], "device": training.get("device"),
        }
    return metrics


def _fmt(value, digits: int = 1, percent: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    value = 100 * value if percent else value
    if abs(value) >= 1e4:
        return f"{value:.1e}"
    if 0 < abs(value) < 10 ** -digits:
        return f"{value:.2g}"
    return f"{value:.{digits}f}"


def _compare(paper_value, ours, percent: bool = False, digits: int = 1) -> tuple[str, str, str]:
    """(paper, ours, ours - paper) as strings; a missing side gives '-' or 'not run'."""
    ours_value = None if ours is None else (100 * ours if percent else ours)
    gap = "-" if paper_value is None or ours_value is None else f"{ours_value - paper_value:+.{digits}f}"
    return _fmt(paper_value, digits), NOT_RUN if ours is None else _fmt(ours, digits, percent), gap


def _rows(params: Params, metrics: dict, paper_rows: dict, robust_only: bool = True) -> list[str]:
    """Paper rows configured in params (in the paper's order), then our other experiments with results."""
    extra = [n for n in metrics if n not in paper_rows and (params.experiments[n].robust or not robust_only)]
    return [n for n in paper_rows if n in params.experiments] + extra


def table_d1a(params: Params, metrics: dict) -> pd.DataFrame:
    """Figure D.1a: clean, PGD, VRA (%), seconds per epoch, epochs, per-instance memory."""
    records = []
    for name in _rows(params, metrics, paper.D1A | paper.LIRESNET_VRA):
        e, ours = params.experiments[name], metrics.get(name)
        theirs = paper.D1A.get(name, (None, None, paper.LIRESNET_VRA.get(name), None, None, None))
        reference = "GloRo" if name in paper.D1A else "LiResNet (Hu et al. 2023)" if name in paper.LIRESNET_VRA else "-"
        row = {"setting": setting_label(e), "model": model_label(e), "arch": e.model.architecture, "experiment": name,
               "paper": reference}
        for key, paper_value in zip(paper.D1A_COLUMNS, theirs):
            percent = key in ("clean", "pgd", "vra")
            value = None if ours is None else ours[key]
            digits = {"epochs": 0, "sec_per_epoch": 2, "mem_mb_per_instance": 3}.get(key, 1)
            row[f"{key} paper"], row[f"{key} ours"], row[f"{key} gap"] = _compare(paper_value, value, percent, digits)
        row["VRA provable bound"] = NOT_RUN if ours is None else _fmt(ours["vra_sound"], 1, True)
        row["VRA last epoch"] = NOT_RUN if ours is None else _fmt(ours["last"]["vra"], 1, True)
        records.append(row)
    return pd.DataFrame(records)


def table_d1b(params: Params, metrics: dict) -> pd.DataFrame:
    """Figure D.1b: time to certify the test set (s) and memory per instance (MB)."""
    records = []
    for name in _rows(params, metrics, paper.D1B):
        e, ours = params.experiments[name], metrics.get(name)
        theirs = paper.D1B.get(name, (None, None))
        row = {"setting": setting_label(e), "model": model_label(e), "experiment": name}
        for key, paper_value in zip(("cert_seconds", "cert_mem_mb_per_instance"), theirs):
            row[f"{key} paper"], row[f"{key} ours"], row[f"{key} gap"] = _compare(
                paper_value, None if ours is None else ours[key], digits=3)
        records.append(row)
    return pd.DataFrame(records)


def table_d1c(params: Params, metrics: dict) -> pd.DataFrame:
    """Figure D.1c: global upper bound, optimised global lower bound, mean local lower bound."""
    records = []
    for name in _rows(params, metrics, paper.D1C, robust_only=False):
        e, ours = params.experiments[name], metrics.get(name)
        theirs = paper.D1C.get(name, (None,) * 3)
        row = {"setting": setting_label(e), "model": model_label(e), "experiment": name}
        for key, paper_value in zip(("lipschitz_global_ub", "lipschitz_global_lb", "lipschitz_local_lb"), theirs):
            row[f"{key} paper"], row[f"{key} ours"], row[f"{key} gap"] = _compare(
                paper_value, None if ours is None else ours[key], digits=2)
        row["provable UB"] = NOT_RUN if ours is None else _fmt(ours["lipschitz_global_ub_sound"], 2)
        row["provable / power, per layer"] = "-" if not (ours or {}).get("layer_bounds") else " ".join(
            f"{layer['sound_over_power']:.4f}{METHOD_MARKS[layer['method']]}" for layer in ours["layer_bounds"])
        budget = (ours or {}).get("lower_bound_budget")
        row["LB steps (global/local)"] = "-" if not budget else f"{budget['global_steps']}/{budget['local_steps']}"
        records.append(row)
    return pd.DataFrame(records)


def table_b(params: Params, table: str) -> pd.DataFrame:
    """Table B.1 or B.2 from params.yaml: the configuration we run, with the paper's where it differs."""
    records = []
    for name, theirs in paper.HYPERPARAMETERS.items():
        if paper.TABLE_OF[name] != table:
            continue
        ours = params.experiments.get(name)
        row = {"experiment": name}
        for key in B_COLUMNS:
            paper_value = theirs[key]
            if ours is None:
                row[key] = f"{NOT_RUN} (paper: {paper_value})"
                continue
            value = paper_loss(ours) if key == "loss" else ours.value(key)
            same = _same(value, paper_value)
            row[key] = f"{value}" if same else f"{value} (paper: {paper_value})"
        records.append(row)
    return pd.DataFrame(records)


def _same(ours, theirs) -> bool:
    try:
        return math.isclose(float(ours), float(theirs), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(ours) == str(theirs)


def table_c1(params: Params, metrics: dict) -> pd.DataFrame:
    """Table C.1: each method's numbers as its paper reports them, and ours for GloRo's settings."""
    records = []
    for setting, method, clean, pgd, vra in paper.C1:
        records.append({"setting": setting, "method": method, "source": "as reported by its paper",
                        "clean": _fmt(clean), "pgd": _fmt(pgd), "vra": _fmt(vra)})
        ours_name = paper.C1_OURS.get(setting) if method == "GloRo" else None
        if ours_name:
            ours = metrics.get(ours_name)
            records.append({"setting": setting, "method": "GloRo (this reproduction)",
                            "source": ours_name if ours else f"{ours_name}: {NOT_RUN}",
                            **{k: NOT_RUN if ours is None else _fmt(ours[k], 1, True)
                               for k in ("clean", "pgd", "vra")}})
    return pd.DataFrame(records)


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """Fold each ``<x> paper``/``<x> ours``/``<x> gap`` column triple into one ``<x>: ours / paper (gap)``."""
    out = pd.DataFrame(index=df.index)
    for column in df.columns:
        if column.endswith(" ours"):
            key = column.removesuffix(" ours")
            out[f"{key}: ours / paper (gap)"] = (df[column] + " / " + df[f"{key} paper"]
                                                 + df[f"{key} gap"].map(lambda g: "" if g == "-" else f" ({g})"))
        elif not column.endswith((" paper", " gap")):
            out[column] = df[column]
    return out


def write_table(df: pd.DataFrame, results: Path, name: str, title: str, notes: str = "") -> None:
    """``results/<name>.md`` (title, table, notes) and ``results/<name>.csv``, atomically."""
    with atomic_open(results / f"{name}.csv", "w") as handle:
        df.to_csv(handle, index=False)
    with atomic_open(results / f"{name}.md", "w") as handle:
        handle.write(f"# {title}\n\n{readable(df).to_markdown(index=False)}\n")
        if notes:
            handle.write(f"\n{notes}\n")


def radius_figure(results: Path, metrics: dict, out: Path) -> None:
    """Certified accuracy against radius for every experiment with a curve (power and provable bounds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in metrics:
        curve = pd.read_csv(results / "plots" / "radius" / f"{name}.csv")
        line, = ax.plot(curve["radius"], curve["certified_accuracy"], label=name)
        ax.plot(curve["radius"], curve["certified_accuracy_sound"], linestyle=":", color=line.get_color())
    ax.set_xlabel("L2 radius")
    ax.set_ylabel("certified accuracy (test)")
    ax.set_title("Certified accuracy vs radius (dotted: provable bound)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_open(out) as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)


def write_all(params: Params, results: Path = Path("results")) -> dict[str, pd.DataFrame]:
    """Write every per-experiment metrics file, table and the radius figure; return the tables."""
    metrics = collect_metrics(results, params)
    for name, record in metrics.items():
        write_json(results / "metrics" / f"{name}.json", record)
        write_json(results / "headline" / f"{name}.json", {key: record[key] for key in HEADLINE})
    headline = ("Ours: the checkpoint with the best VRA on the validation split (carved out of the training data),"
                " evaluated on the test set; 'VRA last epoch' is the final checkpoint. The paper selected by test VRA.")
    tables = {
        "table_D1a": (table_d1a(params, metrics), "Figure D.1a: clean / PGD / VRA (%), s/epoch, epochs, MB/instance",
                      headline + " PGD: accuracy under our L2 attack (CE and margin objectives, restarts; settings in"
                      " results/metrics). Memory on a CPU: bytes autograd saves for backward per instance."),
        "table_D1b": (table_d1b(params, metrics), "Figure D.1b: certification time (s, whole test set) and MB/instance",
                      "Time: one forward pass plus the bottom-logit test over the test set. Memory on a CPU: bytes of"
                      " every tensor the forward pass creates, per instance."),
        "table_D1c": (table_d1c(params, metrics), "Figure D.1c: Lipschitz bounds of the margins",
                      "UB: max_ij K_ij from converged power iteration; provable UB: from the provable per-layer"
                      " bounds, each shown as its ratio to the layer's power-iteration estimate (near-exact"
                      " Gram bound; 'c': circular-convolution bound). LB: Appendix F's optimised global and mean"
                      " local lower bounds (steps used shown)."
                      " 'ReLU GloRo' is taken to be the CE row."),
        "table_B1": (table_b(params, "B.1"), "Table B.1: MinMax hyperparameters (from params.yaml)",
                     "A cell shows our value, and the paper's where they differ."),
        "table_B2": (table_b(params, "B.2"), "Table B.2: ReLU hyperparameters (from params.yaml)",
                     "A cell shows our value, and the paper's where they differ."),
        "table_C1": (table_c1(params, metrics), "Table C.1: VRA comparisons (%)",
                     "Other methods' numbers are as reported by their papers (ball-park, not apples-to-apples)."),
    }
    for name, (df, title, notes) in tables.items():
        write_table(df, results, name, title, notes)
    radius_figure(results, metrics, results / "figure_radius.png")
    return {name: df for name, (df, _, _) in tables.items()}
