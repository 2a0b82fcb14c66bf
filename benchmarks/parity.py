"""Training against the authors' library (PyPI ``gloro`` 1.1.1), one difference at a time.

Every arm trains the ``mnist_t10k_2c2f_minmax`` experiment of params.yaml (2C2F MinMax, orthogonal
init, TRADES lambda 0.1 -> 2.0, Adam 1e-3 held for half the epochs then decayed to 1e-6, batch 512,
5 power iterations, no warm-up, eps 0.3) on images 0-7999 of the genuine MNIST test set and reports
clean accuracy and VRA on images 8000-9999 at eps 0.3 (power bound, iterates converged to 1e-5,
as the pipeline certifies). Arms differ from ``project`` (what the pipeline does) in one way each;
``library`` takes every one of the library's choices at once:

  all_data        no validation split: all 8,000 images train (the library's runs); last epoch
  per_step        lambda and LR follow their schedules per step (the library interpolates per batch)
  through_iters   the gradient flows through the 5 power iterations (the library: tf.while_loop),
                  estimate ||A x|| / ||x|| with x = A^T A u (the library's form)
  library_refresh at every epoch end the iterates restart from random and converge to an absolute
                  1e-2 change of the global bound in chunks of 100 iterations (the library's callback);
                  the project converges its persistent iterates to 1e-5 (relative)
  keras_adam      Keras's Adam: epsilon added to sqrt(v), not to the bias-corrected sqrt(v_hat)
  keras_kl        the library's TRADES term as Keras computes it: KLDivergence between [softmax(f), 0]
                  and the m+1 softmax, both clipped to [1e-7, 1], the gradient through both
  library_schedules  lambda and LR as the library's callbacks set them: per-epoch lists (lambda
                  0.1 + 1.9 e/E, never reaching 2.0; LR exp-decaying from the half to a last value
                  above 1e-6) interpolated per step from the previous epoch's value to this one's
  initial_refresh the iterates converged (loosely, as the library's callback) before the first step
  library_exact   all of ``library`` and the three above

``--export-paired DIR`` writes, per seed, what the ``all_data`` arm starts from (its initial weights
in Keras's layout, its per-epoch batch order, and its logits on 64 images) for
``parity_library.py --paired DIR``, which trains the authors' library from exactly that start: the
two implementations then differ only in their code, not in their random draws.

And two ways of making validation selection cheaper in data: ``val_2pct`` holds out 2% instead
of 10%; ``refit`` selects the epoch on the 10% split, then trains again on all 8,000 images with
the same schedule and stops at the selected epoch (twice the training).

Settings where both implementations agree by construction are not arms: the last short batch is
kept by both; MinMax pairs channels differently (halves here, neighbours there), and Keras flattens
conv kernels as (k k C_in, C_out), but both are permutations of units, under which orthogonal
initialisation and the function class are invariant.

    python -m benchmarks.parity --mnist ../shared/data/mnist --seeds 0 1 2 --workers 2   # ~1 min per run
    python -m benchmarks.parity --arms project library --epochs 100 --eps-train 0.45 --loss 0.1,2.0,100

Writes ``<out>.csv`` (one row per run, appended as runs finish, so an interrupted sweep resumes)
and ``<out>.md`` (mean and spread per arm).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from gloro_repro.config import load_params
from gloro_repro.data.mnist import read_mnist_split
from gloro_repro.gloro import GloroNet, build_network, step_loss
from gloro_repro.gloro.layers import _unit
from gloro_repro.gloro.model import certify_logits, gloro_logits
from gloro_repro.io import atomic_open


@dataclass(frozen=True)
class Arm:
    val_fraction: float = 0.1
    per_step: bool = False
    through_iters: bool = False
    library_refresh: bool = False
    keras_adam: bool = False
    keras_kl: bool = False
    library_schedules: bool = False
    initial_refresh: bool = False
    refit: bool = False


ARMS = {
    "project": Arm(),
    "all_data": Arm(val_fraction=0.0),
    "per_step": Arm(val_fraction=0.0, per_step=True),
    "through_iters": Arm(val_fraction=0.0, through_iters=True),
    "library_refresh": Arm(val_fraction=0.0, library_refresh=True),
    "keras_adam": Arm(val_fraction=0.0, keras_adam=True),
    "library": Arm(val_fraction=0.0, per_step=True, through_iters=True, library_refresh=True, keras_adam=True),
    "keras_kl": Arm(val_fraction=0.0, keras_kl=True),
    "library_schedules": Arm(val_fraction=0.0, library_schedules=True),
    "initial_refresh": Arm(val_fraction=0.0, initial_refresh=True),
    "library_exact": Arm(val_fraction=0.0, through_iters=True, library_refresh=True, keras_adam=True,
                         keras_kl=True, library_schedules=True, initial_refresh=True),
    "val_2pct": Arm(val_fraction=0.02),
    "refit": Arm(refit=True),
}


class ThroughIterations(GloroNet):
    """The library's layer bound: iterations inside the graph, ``||A x|| / ||x||`` with ``x = A^T A u``."""

    def sub_lipschitz(self) -> torch.Tensor:
        if not self.training:
            return super().sub_lipschitz()
        sub = torch.ones((), device=self.layers[-1].weight.device)
        for layer in self.layers[:-1]:
            x = layer.u
            for _ in range(self.power_iterations):
                x = layer.adjoint_map(layer.linear_map(_unit(x)))
            layer.u.copy_(_unit(x.detach()))
            sub = sub * layer.linear_map(x).norm() / (x.norm() + 1e-9)
        return sub

    def logits_and_bounds(self, x):  # the iterations run inside sub_lipschitz, not before
        return self.f(x), self.k_ij()


class KerasAdam(torch.optim.Optimizer):
    """Keras's Adam: ``p -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)``."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-7):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                t, m, v = state["t"], state["m"], state["v"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                alpha = group["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-alpha)


def keras_trades(logits: torch.Tensor, gloro: torch.Tensor, labels: torch.Tensor, lam: float) -> torch.Tensor:
    """The library's ``sparse_trades_kl``: CE on f plus lambda times Keras's ``KLDivergence`` of the m+1
    softmax from ``[softmax(f), 0]``, both clipped to [1e-7, 1], with the gradient through both."""
    target = torch.cat([logits.softmax(1), torch.zeros_like(logits[:, :1])], 1).clamp(1e-7, 1)
    predicted = gloro.softmax(1).clamp(1e-7, 1)
    kl = (target * (target / predicted).log()).sum(1)
    return F.cross_entropy(logits, labels) + lam * kl.mean()


def library_lists(experiment) -> tuple[list[float], list[float]]:
    """Per-epoch lambda and LR as the library's ``linear_from_<x>`` and ``decay_after_half_to_<lb>``
    schedules list them."""
    schedule, epochs = experiment.schedule(), experiment.training.epochs
    lam, lr = schedule.lam, schedule.lr
    half = int(0.5 * epochs)
    decay = math.log(lr.lower_bound / lr.init_lr) / (epochs - half)
    return ([lam.start + (lam.end - lam.start) * e / epochs for e in range(epochs)],
            [lr.init_lr] * half + [lr.init_lr * math.exp(decay * e) for e in range(epochs - half)])


def library_value(values: list[float], epoch: int, step: int, steps: int) -> float:
    """The library's per-step value: from the previous epoch's entry to this epoch's, linearly."""
    previous, current = values[max(epoch - 1, 0)], values[min(epoch, len(values) - 1)]
    return previous + (current - previous) * step / steps


@torch.no_grad()
def library_refresh(net: GloroNet, generator: torch.Generator, tol: float = 1e-2, chunk: int = 100,
                    max_tries: int = 1000) -> None:
    """The library's epoch-end refresh: random iterates, then chunks of iterations until the global
    bound moves by at most ``tol`` (absolute)."""
    for layer in net.layers:
        layer.u.copy_(_unit(torch.randn(layer.u.shape, generator=generator)))
    previous, current = None, net.layer_product()
    for _ in range(max_tries):
        if previous is not None and abs(current - previous) <= tol:
            break
        net.power_iterate(chunk)
        previous, current = current, net.layer_product()


@torch.no_grad()
def evaluate(net: GloroNet, x: torch.Tensor, y: torch.Tensor, eps: float, tol: float) -> tuple[float, float]:
    """Clean accuracy and VRA (power bound, ``net``'s iterates first converged to ``tol``)."""
    net.eval()
    net.converge(tol)
    cert = certify_logits(net.f(x), net.k_ij(), eps)
    correct = cert.prediction == y
    return float(correct.float().mean()), float((correct & cert.certified).float().mean())


def seeded_start(experiment, seed: int, input_shape: tuple[int, ...]) -> tuple[torch.nn.Sequential, torch.Generator]:
    """What a seed fixes for every arm (and ``--export-paired`` hands the library): f's initial
    weights and iterates, and the generator of the per-epoch batch orders."""
    torch.manual_seed(seed)
    model = experiment.model
    f = build_network(model.architecture, input_shape, 10, model.activation, model.init, seed=seed)
    return f, torch.Generator().manual_seed(seed)


def run(arm: Arm, experiment, seed: int, data: tuple[torch.Tensor, ...], stop_after: int | None = None) -> dict:
    """Train one arm with one seed; the metrics of the last epoch (and of the validation-selected one).

    ``stop_after``: end after that many epochs of the full schedule (the ``refit`` arm's second run)."""
    x_all, y_all, x_test, y_test = data
    n_val = round(len(x_all) * arm.val_fraction)
    val_idx = np.random.default_rng(seed).permutation(len(x_all))[:n_val]
    train_mask = np.ones(len(x_all), dtype=bool)
    train_mask[val_idx] = False
    x, y = x_all[train_mask], y_all[train_mask]
    model, training = experiment.model, experiment.training
    f, order_g = seeded_start(experiment, seed, tuple(x.shape[1:]))
    cls = ThroughIterations if arm.through_iters else GloroNet
    net = cls(f, eps=experiment.eps_test, power_iterations=model.power_iterations)
    schedule = experiment.schedule()
    optimiser = (KerasAdam if arm.keras_adam else torch.optim.Adam)(net.parameters(), lr=training.init_lr, eps=1e-7)
    refresh_g = torch.Generator().manual_seed(seed + 1)
    n_batches = -(-len(x) // training.batch_size)
    lam_list, lr_list = library_lists(experiment)
    best, start = (-1.0, None, -1), time.perf_counter()
    if arm.initial_refresh:
        library_refresh(net, refresh_g)
    for epoch in range(stop_after or schedule.total_epochs):
        net.train()
        order = torch.randperm(len(x), generator=order_g)
        for b in range(n_batches):
            settings = schedule.at(epoch + b / n_batches if arm.per_step else epoch)
            lam, lr = settings.lam, settings.lr
            if arm.library_schedules:
                lam, lr = (library_value(values, epoch, b, n_batches) for values in (lam_list, lr_list))
            for group in optimiser.param_groups:
                group["lr"] = lr
            batch = order[b * training.batch_size:(b + 1) * training.batch_size]
            if arm.keras_kl:
                logits, k_ij = net.logits_and_bounds(x[batch])
                loss = keras_trades(logits, gloro_logits(logits, k_ij, settings.eps), y[batch], lam)
            else:
                loss = step_loss(net, x[batch], y[batch], settings.eps, lam, experiment.training.loss).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if arm.library_refresh:
            library_refresh(net, refresh_g)
        else:  # the pipeline converges before every validation
            net.converge(training.converge_tol)
        if n_val:
            _, val_vra = evaluate(net, x_all[val_idx], y_all[val_idx], experiment.eps_test, training.converge_tol)
            if val_vra > best[0]:
                best = (val_vra, {k: v.clone() for k, v in net.state_dict().items()}, epoch + 1)
    clean, vra = evaluate(net, x_test, y_test, experiment.eps_test, training.converge_tol)
    row = {"seed": seed, "train_size": len(x), "clean": clean, "vra": vra, "seconds": time.perf_counter() - start}
    if best[1] is not None:
        net.load_state_dict(best[1])
        clean_sel, vra_sel = evaluate(net, x_test, y_test, experiment.eps_test, training.converge_tol)
        row |= {"selected_epoch": best[2], "clean_selected": clean_sel, "vra_selected": vra_sel}
    if arm.refit:
        again = run(Arm(val_fraction=0.0), experiment, seed, data, stop_after=best[2])
        row |= {"clean_refit": again["clean"], "vra_refit": again["vra"], "seconds": row["seconds"] + again["seconds"]}
    return row


def _pairs_for_keras(channels: int) -> np.ndarray:
    """``perm[c]``: our channel that the library's channel c holds. Our MinMax pairs channel k with
    k + C/2 (halves), the library's pairs 2k with 2k+1 (neighbours)."""
    half = np.arange(channels // 2)
    return np.stack([half, half + channels // 2], 1).reshape(-1)


def keras_weights(f: torch.nn.Sequential) -> list[np.ndarray]:
    """f's weights as the library's 2C2F (``model.get_weights()`` order): conv kernels
    ``[kh, kw, C_in, C_out]``, dense kernels ``[in, out]``, channels ordered for the library's MinMax
    pairing, the first dense layer's inputs in NHWC flattening order."""
    out, perm_in, spatial = [], None, None
    for layer in f:
        weight = getattr(layer, "weight", None)
        if weight is None:
            continue
        w, b = weight.detach().double().numpy(), layer.bias.detach().double().numpy()
        last = layer is f[-1]
        perm_out = np.arange(w.shape[0]) if last else _pairs_for_keras(w.shape[0])
        if w.ndim == 4:
            w = w[perm_out][:, perm_in if perm_in is not None else slice(None)]
            out += [w.transpose(2, 3, 1, 0), b[perm_out]]
            spatial = layer.output_shape[1:]
        else:
            if spatial is not None:  # first dense after the flatten: NCHW -> NHWC inputs, channels permuted
                h, wd = spatial
                c = np.arange(len(perm_in))
                ours = (perm_in[c][None, None, :] * h * wd + np.arange(h)[:, None, None] * wd
                        + np.arange(wd)[None, :, None])
                w, spatial = w[:, ours.reshape(-1)], None
            elif perm_in is not None:
                w = w[:, perm_in]
            out += [w[perm_out].T, b[perm_out]]
        perm_in = perm_out
    return [a.astype(np.float32) for a in out]


def export_paired(folder: Path, experiment, seeds: list[int], data: tuple[torch.Tensor, ...]) -> None:
    """Per seed, ``seed<k>.npz``: the ``all_data`` arm's initial weights (Keras layout), its per-epoch
    orders of the 8,000 training images, and its logits on the first 64 of them (a layout check)."""
    x_all = data[0]
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        f, order_g = seeded_start(experiment, seed, tuple(x_all.shape[1:]))
        orders = np.stack([torch.randperm(len(x_all), generator=order_g).numpy()
                           for _ in range(experiment.schedule().total_epochs)])
        with torch.no_grad():
            logits = f(x_all[:64]).numpy()
        weights = keras_weights(f)
        arrays = {f"w{i}": w for i, w in enumerate(weights)}
        np.savez(folder / f"seed{seed}.npz", orders=orders, logits=logits, **arrays)
        print(f"wrote {folder / f'seed{seed}.npz'}")


def _task(task) -> dict:
    name, seed, experiment, setting, data = task
    arm = ARMS[name]
    return {"setting": setting, "arm": name, **dataclasses.asdict(arm), **run(arm, experiment, seed, data)}


def _results(tasks: list, workers: int):
    """Each task's row as it finishes: in this process for one worker, else in forked processes of one
    torch thread each (a fork of a process whose torch threads have run may hang if it uses several)."""
    if workers == 1:
        yield from map(_task, tasks)
        return
    with multiprocessing.get_context("fork").Pool(workers, torch.set_num_threads, (1,)) as pool:
        yield from pool.imap_unordered(_task, tasks)


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and range of clean and VRA per arm and setting, in percent."""
    out = []
    for (setting, arm), group in rows.groupby(["setting", "arm"], sort=False):
        entry = {"setting": setting, "arm": arm, "seeds": len(group), "train": int(group["train_size"].iloc[0])}
        for key in ("clean", "vra", "vra_selected", "vra_refit"):
            values = 100 * group[key].dropna() if key in group else pd.Series(dtype=float)
            if len(values):
                entry[f"{key} mean"] = f"{values.mean():.2f}"
                entry[f"{key} sd"] = f"{values.std(ddof=1):.2f}" if len(values) > 1 else "-"
                entry[f"{key} range"] = f"{values.min():.2f}-{values.max():.2f}"
        out.append(entry)
    return pd.DataFrame(out).fillna("")


def against_library(rows: pd.DataFrame, library: pd.DataFrame, arm: str = "all_data") -> pd.DataFrame:
    """VRA of the project's ``arm`` against each of the library's arms (``parity_library.py``'s
    ``init``), per setting, in percent: mean and sd over seeds, the difference project - library
    and its standard error; paired by seed for the library's ``paired`` runs (same start and batch
    order as the project's), Welch's otherwise (the two draw their starts independently)."""
    out = []
    for (epochs, eps_train, init), lib in library.groupby(["epochs", "eps_train", "init"], sort=False):
        ours = rows[(rows["arm"] == arm) & rows["setting"].str.startswith(f"{epochs} epochs, eps_train {eps_train},")]
        ours = ours.set_index("seed")["vra"] * 100
        theirs = lib.set_index("seed")["vra_tight"] * 100
        if not len(ours) or not len(theirs):
            continue
        paired = init == "paired"
        if paired:  # only the seeds both ran, difference by difference
            both = ours.index.intersection(theirs.index)
            ours, theirs = ours[both], theirs[both]
            se = (ours - theirs).std(ddof=1) / math.sqrt(len(both))
        else:
            se = math.sqrt(ours.var(ddof=1) / len(ours) + theirs.var(ddof=1) / len(theirs))
        out.append({"setting": f"{epochs} epochs, eps_train {eps_train}", "library": init,
                    "library seeds": len(theirs), "library VRA": f"{theirs.mean():.2f} ({theirs.std(ddof=1):.2f})",
                    f"project ({arm}) seeds": len(ours), "project VRA": f"{ours.mean():.2f} ({ours.std(ddof=1):.2f})",
                    "project - library": f"{ours.mean() - theirs.mean():+.2f}", "se": f"{se:.2f}",
                    "paired by seed": "yes" if paired else "no"})
    return pd.DataFrame(out)


def against_arm(rows: pd.DataFrame, base: str = "all_data") -> pd.DataFrame:
    """Each arm's VRA against ``base`` at the same seeds (same start and batch order), in percent:
    the mean difference and its standard error."""
    out = []
    for setting, group in rows.groupby("setting", sort=False):
        vra = group.pivot_table(index="seed", columns="arm", values="vra") * 100
        if base not in vra:
            continue
        for arm in vra.columns.drop(base):
            diff = (vra[arm] - vra[base]).dropna()
            if len(diff) > 1:
                se = diff.std(ddof=1) / math.sqrt(len(diff))
                out.append({"setting": setting, "arm": arm, "seeds": len(diff),
                            "VRA": f"{vra[arm][diff.index].mean():.2f}",
                            f"{base} at those seeds": f"{vra[base][diff.index].mean():.2f}",
                            "difference": f"{diff.mean():+.2f}", "se": f"{se:.2f}"})
    return pd.DataFrame(out)


def per_seed(rows: pd.DataFrame, library: pd.DataFrame, arms: tuple[str, ...] = ("all_data", "library_exact")
             ) -> dict[str, pd.DataFrame]:
    """Every seed's VRA (percent) per setting: the library's arms beside the project's ``arms``."""
    tables = {}
    for (epochs, eps_train), lib in library.groupby(["epochs", "eps_train"], sort=False):
        setting = f"{epochs} epochs, eps_train {eps_train}"
        ours = rows[rows["arm"].isin(arms) & rows["setting"].str.startswith(setting + ",")]
        table = pd.concat([(lib.pivot_table(index="seed", columns="init", values="vra_tight") * 100)
                           .add_prefix("library "),
                           (ours.pivot_table(index="seed", columns="arm", values="vra") * 100).add_prefix("project ")],
                          axis=1).sort_index()
        tables[setting] = table.round(2)
    return tables


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, default=Path("../shared/data/mnist"),
                        help="folder with the genuine t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs (LR decay follows)")
    parser.add_argument("--eps-train", type=float, default=None, help="override training.eps_train")
    parser.add_argument("--lam", default=None, help="override training.lam (TRADES's lambda), e.g. 0.1,2.0,100")
    parser.add_argument("--workers", type=int, default=1, help="runs in parallel, one torch thread each")
    parser.add_argument("--out", default="results/parity", help="output path without extension")
    parser.add_argument("--export-paired", type=Path, default=None, metavar="DIR",
                        help="write each seed's start for parity_library.py --paired DIR, and train nothing")
    args = parser.parse_args(argv)
    experiment = load_params("params.yaml").experiments["mnist_t10k_2c2f_minmax"]
    overrides = {k: v for k, v in (("epochs", args.epochs), ("eps_train", args.eps_train), ("lam", args.lam))
                 if v is not None}
    experiment = experiment.with_values(**overrides) if overrides else experiment
    t = experiment.training
    setting = f"{t.epochs} epochs, eps_train {t.eps_train}, lambda {t.lam}"
    x, y = read_mnist_split(args.mnist, "test")
    x = x.float() / 255
    data = (x[:8000], y[:8000], x[8000:], y[8000:])
    if args.export_paired:
        export_paired(args.export_paired, experiment, args.seeds, data)
        return 0
    csv = Path(f"{args.out}.csv")
    rows = pd.read_csv(csv) if csv.exists() else pd.DataFrame(columns=["setting", "arm", "seed"])
    done = set(zip(rows["setting"], rows["arm"], rows["seed"]))
    tasks = [(name, seed, experiment, setting, data) for name in args.arms for seed in args.seeds
             if (setting, name, seed) not in done]
    for row in _results(tasks, args.workers):
        print(f"{row['arm']} seed {row['seed']}: clean {100 * row['clean']:.2f} VRA {100 * row['vra']:.2f}"
              + (f" (selected epoch {row['selected_epoch']}: VRA {100 * row['vra_selected']:.2f})"
                 if "vra_selected" in row else "") + f", {row['seconds']:.0f} s", flush=True)
        rows = pd.concat([rows, pd.DataFrame([row])], ignore_index=True)
        with atomic_open(csv, "w") as handle:
            rows.to_csv(handle, index=False)
    with atomic_open(f"{args.out}.md", "w") as handle:
        handle.write(summary(rows).to_markdown(index=False) + "\n")
        handle.write("\nEach arm against all_data at the same seeds (VRA, percent):\n\n"
                     + against_arm(rows).to_markdown(index=False, disable_numparse=True) + "\n")
        library_csv = Path(f"{args.out}_library.csv")
        if library_csv.exists():
            library = pd.read_csv(library_csv)
            handle.write(f"\nAgainst the authors' library ({library_csv}; VRA at eps 0.3, mean (sd)):\n\n"
                         + against_library(rows, library).to_markdown(index=False, disable_numparse=True) + "\n")
            for setting, table in per_seed(rows, library).items():
                handle.write(f"\nEvery seed, {setting} (VRA at eps 0.3):\n\n" + table.to_markdown() + "\n")
    print(summary(rows).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
