"""Full-size training epochs of Figure D.1a's rows through the pipeline's Lightning loop.

Synthetic uint8 images of the real shapes and sizes (MNIST 60,000 x 1x28x28, CIFAR-10 50,000 x
3x32x32, Tiny-ImageNet 100,000 x 3x64x64), made on the device and handed to the pipeline's
``ArraysDataModule``; each row's own settings (batch size, augmentation, activation, loss,
power iterations, float32 precision) train ``--epochs`` epochs with ``GloroModule`` as the train
stage does; the median seconds of the epochs after the first (``TrainingCosts``: the training
batches up to the GPU's last kernel, not the epoch-end convergence, timed separately) and memory
per instance stand beside the paper's. ``--tf32`` times every row as if its experiment said
``training.tf32: true``. ``--long N`` then trains one MNIST-shaped row for
N epochs with a checkpoint every epoch, stops it halfway and resumes it from ``last.ckpt``, and
reports whether time per epoch stayed flat, memory stayed flat and the resumed run continued.

    python -m benchmarks.full_epochs --out results/full_epochs_h200                # every row, 4 epochs
    python -m benchmarks.full_epochs --rows mnist_2c2f_minmax --long 500 --out ...  # + the long run
"""
from __future__ import annotations

import argparse
import datetime
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from tqdm import tqdm

from gloro_repro.config import load_params
from gloro_repro.gloro.precision import float32_precision
from gloro_repro.hardware import Hardware
from gloro_repro.io import atomic_open, write_json
from gloro_repro.lit.costs import training_costs
from gloro_repro.lit.datamodule import ArraysDataModule
from gloro_repro.lit.module import GloroModule
from gloro_repro.paper import D1A
from gloro_repro.training import build_trainer, datamodule_for, precision

from .run import describe_device

# dataset -> (training images, image shape, classes) of the real data
SHAPES = {"mnist": (60_000, (1, 28, 28), 10), "cifar10": (50_000, (3, 32, 32), 10),
          "tinyimagenet": (100_000, (3, 64, 64), 200)}
PAPER_FRACTION_GOAL = 1 / 3  # s/epoch at most a third of the paper's


class EpochEnds(Callback):
    """Wall-clock time at every epoch's end, and memory: on CUDA the memory allocated, elsewhere the
    process's peak resident set (a leak makes either climb). Lightning calls this before the module's
    epoch-end convergence, so the time between two stamps holds one epoch's training and one convergence."""

    def __init__(self, bar: tqdm | None = None):
        self.ends: list[float] = []
        self.memory_mb: list[float] = []
        self.bar = bar  # advanced once an epoch

    def on_train_epoch_end(self, trainer, module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
            self.memory_mb.append(torch.cuda.memory_allocated(module.device) / 2 ** 20)
        else:
            self.memory_mb.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10)  # KiB on Linux
        self.ends.append(time.perf_counter())
        if self.bar is not None:
            self.bar.update(1)


def synthetic_data(experiment, device: torch.device, images: int | None = None) -> ArraysDataModule:
    """The experiment's data module holding random uint8 images of its dataset's real shape and
    size (or ``images`` of them), on ``device``."""
    n, shape, classes = SHAPES[experiment.data.dataset]
    n = images or n
    data = datamodule_for(experiment, "unused")  # no files: setup() keeps the tensors set here
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, 256, (n, *shape), generator=g, device=device, dtype=torch.uint8)
    y = torch.randint(0, classes, (n,), generator=g, device=device)
    data.tensors = {"train": (x, y), "val": (x[:0], y[:0]), "test": (x[:0], y[:0])}
    return data


def train_epochs(name: str, epochs: int, hardware: Hardware, out_dir: Path | None = None, resume: bool = False,
                 stop_after: int | None = None, images: int | None = None, params_path: str = "params.yaml",
                 tf32: bool | None = None, bar: tqdm | None = None):
    """``epochs`` epochs of the row ``name`` on synthetic data, in its experiment's float32 precision (or
    ``tf32`` if given), advancing ``bar`` every epoch; returns (trainer, module, EpochEnds)."""
    experiment = load_params(params_path).experiments[name].with_values(warmup=0, epochs=epochs)
    if tf32 is not None:
        experiment = experiment.with_values(tf32=tf32)
    _, shape, classes = SHAPES[experiment.data.dataset]
    data = synthetic_data(experiment, hardware.device(), images)
    module = GloroModule(experiment.trained_settings(), list(shape), classes, cuda_graphs=hardware.cuda_graphs)
    ends = EpochEnds(bar)
    callbacks = [ends]
    if out_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=out_dir, filename="last", enable_version_counter=False))
    trainer = build_trainer(stop_after or epochs, False, hardware.one_device(), experiment.training.batch_size,
                            callbacks=tuple(callbacks), limit_val_batches=0, enable_checkpointing=out_dir is not None,
                            progress=False)
    with float32_precision(precision(experiment)):
        trainer.fit(module, data, ckpt_path=out_dir / "last.ckpt" if resume else None)
    return trainer, module, ends


def epoch_row(name: str, epochs: int, hardware: Hardware, images: int | None = None, tf32: bool | None = None
              ) -> dict:
    trainer, module, ends = train_epochs(name, epochs, hardware, images=images, tf32=tf32)
    costs = training_costs(trainer)
    n, shape = len(trainer.datamodule.tensors["train"][0]), SHAPES[module.experiment.data.dataset][1]
    timed = costs.epoch_seconds[1:] or costs.epoch_seconds  # the first holds the graphs' capture
    seconds = statistics.median(timed)
    paper = D1A[name][3]
    epoch_walls = [b - a for a, b in zip(ends.ends, ends.ends[1:])]
    return {"experiment": name, "images": n, "input": "x".join(map(str, shape)),
            "batch": module.experiment.training.batch_size, "augmentation": module.experiment.training.augmentation,
            "float32": precision(module.experiment), "epochs_run": epochs, "s_per_epoch": seconds,
            "min_s": min(timed), "max_s": max(timed), "first_epoch_s": costs.epoch_seconds[0],
            "wall_s_per_epoch_with_convergence": statistics.median(epoch_walls) if epoch_walls else None,
            "mem_mb_per_instance": costs.mem_mb_per_instance, "paper_s_per_epoch": paper,
            "paper_mem_mb_per_instance": D1A[name][5], "fraction_of_paper": seconds / paper,
            "goal_met": seconds <= paper * PAPER_FRACTION_GOAL}


def long_run(name: str, epochs: int, hardware: Hardware, images: int | None = None, tf32: bool | None = None
             ) -> dict:
    """``epochs`` epochs with a checkpoint every epoch, stopped at half and resumed from ``last.ckpt``."""
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=epochs, desc=f"long run of {name}", unit="epoch") as bar:
        half = epochs // 2
        _, _, ends_first = train_epochs(name, epochs, hardware, Path(tmp), stop_after=half, images=images, tf32=tf32,
                                        bar=bar)
        saved_epoch = torch.load(Path(tmp) / "last.ckpt", map_location="cpu", weights_only=False)["epoch"]
        second, _, ends_second = train_epochs(name, epochs, hardware, Path(tmp), resume=True, images=images, tf32=tf32,
                                              bar=bar)
        costs = training_costs(second)
    seconds = costs.epoch_seconds  # both halves: the callback's state travels in the checkpoint
    tenth = max(1, len(seconds) // 10)
    early, late = statistics.median(seconds[1:1 + tenth]), statistics.median(seconds[-tenth:])
    memory = ends_first.memory_mb + ends_second.memory_mb
    return {"experiment": name, "epochs": epochs, "epochs_timed": len(seconds), "stopped_after": half,
            "checkpoint_epoch_at_stop": saved_epoch + 1, "resumed_to": second.current_epoch,
            "median_s_first_tenth": early, "median_s_last_tenth": late, "time_drift": late / early - 1,
            "max_s_per_epoch": max(seconds[1:]),
            "memory": "CUDA allocated" if hardware.device().type == "cuda" else "process peak RSS",
            "memory_mb_first": memory[0], "memory_mb_last": memory[-1], "memory_mb_max": max(memory),
            "epoch_seconds": seconds, "memory_mb": memory}


def render(results: dict) -> str:
    import pandas as pd
    lines = [f"# Full-size training epochs (Figure D.1a rows), {results['device']}", "",
             f"torch {results['torch']}; {results['date']}; command: `{results['command']}`. Synthetic uint8 "
             "images of the real shapes (as many as the images column says: the real training-set sizes unless "
             "`--images`) through the pipeline's Lightning loop "
             "(`GloroModule`, `ArraysDataModule`, each row's batch size, augmentation, loss and float32 precision); "
             "s/epoch is the median over the epochs after the first of the training batches, up to the GPU's "
             "last kernel (min and max beside it; the epoch-end convergence is in the wall column); CUDA graphs: "
             f"{results['cuda_graphs']}. Goal: at most a third of the paper's s/epoch.", ""]
    if results["rows"]:
        lines += [pd.DataFrame(results["rows"]).to_markdown(index=False, floatfmt=".3f"), ""]
    if results.get("long"):
        long = {k: v for k, v in results["long"].items() if k not in ("epoch_seconds", "memory_mb")}
        lines += ["## Long run", "", pd.DataFrame([long]).to_markdown(index=False, floatfmt=".3f"), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=list(D1A), choices=list(D1A), metavar="EXPERIMENT",
                        help="Figure D.1a rows to time (default: all 12)")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs per row; the median of those after the first is reported (default 4)")
    parser.add_argument("--tf32", action="store_true",
                        help="train every row with TF32 matmuls and convolutions (training.tf32: true), "
                             "not its experiment's float32 precision")
    parser.add_argument("--long", type=int, default=0, metavar="N",
                        help="then train the first row N epochs, stopped at N/2 and resumed (default: skip)")
    parser.add_argument("--images", type=int, default=None,
                        help="images per dataset (default: the real training-set size; fewer for a smoke run)")
    parser.add_argument("--out", default="results/full_epochs", help="output path without extension")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.long < 0 or args.long == 1 or (args.images is not None and args.images < 1):
        parser.error(f"--epochs must be >= 1, --long 0 or >= 2 and --images >= 1, "
                     f"got {args.epochs}, {args.long} and {args.images}")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    hardware = Hardware.from_env()
    device = hardware.device()
    results = {"device": describe_device(device), "torch": torch.__version__, "date": datetime.date.today().isoformat(),
               "command": " ".join(["python -m benchmarks.full_epochs", *(argv if argv is not None else sys.argv[1:])]),
               "cuda_graphs": hardware.cuda_graphs and device.type == "cuda", "rows": [], "long": None}

    def save() -> None:  # after every row, so a run stopped early keeps what it measured
        write_json(f"{args.out}.json", results)
        with atomic_open(f"{args.out}.md", "w") as handle:
            handle.write(render(results))

    for name in tqdm(args.rows, desc="D.1a rows", unit="row"):
        results["rows"].append(epoch_row(name, args.epochs, hardware, args.images, args.tf32 or None))
        tqdm.write(f"{name}: {results['rows'][-1]['s_per_epoch']:.3f} s/epoch "
                   f"(paper {results['rows'][-1]['paper_s_per_epoch']})")
        save()
    if args.long:
        results["long"] = long_run(args.rows[0], args.long, hardware, args.images, args.tf32 or None)
        save()
    print(f"wrote {args.out}.json and {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
