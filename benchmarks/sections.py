"""The benchmark sections; each returns table rows (dicts) whose figures are same-run ratios."""
from __future__ import annotations

import copy
import logging
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from gloro_repro.gloro import float32_precision, step_loss
from gloro_repro.gloro.lower_bounds import global_lower_bound
from gloro_repro.measure import inference_mb_per_instance

from .timing import interleaved, median_ms, median_ratio, timed
from .workloads import ARCHITECTURES, CONVERGE_TOL, Workload, network

TRAIN_GOAL = 1.10      # GloRo step time / plain step time, at most
CERT_GOAL = 0.90       # certification throughput / plain inference throughput, at least
EPOCH_GOAL = 1.10      # full epoch (data, augmentation, Lightning) / bare forward-backward, at most


def _shape(w: Workload) -> str:
    return "x".join(map(str, w.x.shape[1:]))


def train_row(w: Workload, repeats: int) -> dict:
    """GloRo training step against the plain step of the same network, plus power iteration's share;
    on CUDA also both steps replayed from CUDA graphs (the pipeline's default there). The goal is
    judged on the pipeline's own steps: graphed on CUDA, eager on a CPU. Both steps run in IEEE
    float32, as the train stage runs them by default (``training.tf32: false``)."""
    workloads = {"plain": w.plain_step, "gloro": w.gloro_step, "power": w.power_iteration}
    graphs = w.x.device.type == "cuda"
    if graphs:
        workloads |= {"plain_graphed": lambda: w.graphed_step("plain"),
                      "gloro_graphed": lambda: w.graphed_step("gloro")}
    with float32_precision("ieee"):
        times = interleaved(workloads, repeats, w.x.device)
    row = {"plain_step_ms": median_ms(times, "plain"), "gloro_step_ms": median_ms(times, "gloro"),
           "train_ratio_eager": median_ratio(times, "gloro", "plain"),
           "power_iteration_share": median_ratio(times, "power", "plain")}
    if graphs:
        row |= {"plain_graphed_ms": median_ms(times, "plain_graphed"),
                "gloro_graphed_ms": median_ms(times, "gloro_graphed"),
                "train_ratio_graphed": median_ratio(times, "gloro_graphed", "plain_graphed"),
                "gloro_graphed_over_plain_eager": median_ratio(times, "gloro_graphed", "plain")}
    ratio = row["train_ratio_graphed" if graphs else "train_ratio_eager"]
    return row | {"train_ratio": ratio, "train_goal": TRAIN_GOAL, "train_met": ratio <= TRAIN_GOAL}


def cert_row(w: Workload, repeats: int) -> dict:
    """Certification throughput (power and provable bound) as a fraction of plain inference's; on
    CUDA also certification from CUDA graphs (the default there) against plain inference both
    eager and graphed. The goal is judged against the same machinery: graphed on CUDA, eager on a CPU."""
    graphs = w.x.device.type == "cuda"
    workloads = {"plain": w.inference, "certify": w.certifier()}
    if graphs:
        workloads |= {"plain_graphed": w.graphed_inference, "certify_graphed": w.certifier(graphs=True)}
    times = interleaved(workloads, repeats, w.x.device)
    # a loop of its own: the float64 copies it allocates slow down whatever runs right after them
    sound_workloads = {"plain": w.inference, "sound": w.certifier("sound")}
    if graphs:
        sound_workloads |= {"plain_graphed": w.graphed_inference, "sound_graphed": w.certifier("sound", graphs=True)}
    sound = interleaved(sound_workloads, repeats, w.x.device)
    row = {"inference_ms": median_ms(times, "plain"), "certify_ms": median_ms(times, "certify"),
           "cert_throughput_ratio_eager": 1 / median_ratio(times, "certify", "plain"),
           "sound_cert_throughput_ratio_eager": 1 / median_ratio(sound, "sound", "plain")}
    if graphs:
        row |= {"inference_graphed_ms": median_ms(times, "plain_graphed"),
                "certify_graphed_ms": median_ms(times, "certify_graphed"),
                "cert_throughput_ratio_graphed": 1 / median_ratio(times, "certify_graphed", "plain_graphed"),
                "cert_graphed_vs_plain_eager": 1 / median_ratio(times, "certify_graphed", "plain"),
                "sound_cert_throughput_ratio_graphed": 1 / median_ratio(sound, "sound_graphed", "plain_graphed"),
                "sound_graphed_vs_plain_eager": 1 / median_ratio(sound, "sound_graphed", "plain")}
    suffix = "graphed" if graphs else "eager"
    ratio = row[f"cert_throughput_ratio_{suffix}"]
    return row | {"cert_throughput_ratio": ratio, "cert_goal": CERT_GOAL, "cert_met": ratio >= CERT_GOAL,
                  "sound_cert_throughput_ratio": row[f"sound_cert_throughput_ratio_{suffix}"]}


def memory_row(w: Workload) -> dict:
    """Appendix E memory per instance, GloRo against Standard, for training and certification."""
    train_std, train_gloro = w.training_mb_per_instance(w.plain_loss), w.training_mb_per_instance(w.gloro_loss)
    certify = w.certifier()
    cert_std = inference_mb_per_instance(w.net.f, w.x)  # w.net is in eval mode after certifier()
    cert_gloro = inference_mb_per_instance(lambda _: certify(), w.x)
    return {"train_mb_standard": train_std, "train_mb_gloro": train_gloro, "train_mb_ratio": train_gloro / train_std,
            "cert_mb_standard": cert_std, "cert_mb_gloro": cert_gloro, "cert_mb_ratio": cert_gloro / cert_std}


def _repeats_for(architecture: str, device: torch.device, repeats: int) -> int:
    # 8C2F at 64x64 takes ~10 s per CPU step; fewer repeats keep the CPU run within minutes
    return min(repeats, 3) if architecture == "8C2F" and device.type == "cpu" else repeats


def architectures(device: torch.device, repeats: int, batch_sizes: tuple[int, ...] = (256,)) -> list[dict]:
    """Train and certification ratios and memory: every architecture at its dataset's input size."""
    rows = []
    for batch_size in batch_sizes:
        for arch in ARCHITECTURES:
            w = Workload.build(arch, batch_size, device)
            n = _repeats_for(arch, device, repeats)
            rows.append({"architecture": arch, "input": _shape(w), "batch": batch_size, "repeats": n,
                         **train_row(w, n), **cert_row(w, n), **memory_row(w)})
    return rows


def one_off(device: torch.device, repeats: int) -> list[dict]:
    """One-off costs: power iteration to convergence from fresh iterates, and the sound bound,
    each against one plain inference batch of 256 (the unit the certification throughput uses)."""
    rows = []
    for arch, (shape, classes) in ARCHITECTURES.items():
        w = Workload.build(arch, 256, device)
        fresh = network(arch, shape, classes, device)
        iterations: list[int] = []
        converge = lambda: iterations.append(copy.deepcopy(fresh).converge(CONVERGE_TOL))
        # every layer's bound computed afresh (k_ij_sound would read the bounds its warm-up call cached)
        sound = lambda: [layer.sound_bound() for layer in fresh.layers]
        times = interleaved({"plain": w.inference, "converge": converge, "sound": sound},
                            _repeats_for(arch, device, repeats), device)
        per_layer = iterations[-1]
        rows.append({"architecture": arch, "converge_iterations_max": max(per_layer),
                     "converge_iterations_total": sum(per_layer), "converge_s": median_ms(times, "converge") / 1e3,
                     "converge_in_inference_batches": median_ratio(times, "converge", "plain"),
                     "sound_bound_s": median_ms(times, "sound") / 1e3,
                     "sound_in_inference_batches": median_ratio(times, "sound", "plain")})
    return rows


def lower_bounds(device: torch.device, repeats: int, steps: int = 50,
                 pairs: tuple[int, ...] = (16, 64, 256, 1024), sequential_pairs: int = 16) -> list[dict]:
    """Appendix F's optimisation with all pairs in one batch, against one pair at a time."""
    shape, classes = ARCHITECTURES["2C2F"]
    f = network("2C2F", shape, classes, device).f.eval()
    pool = torch.rand(1024, *shape, generator=torch.Generator().manual_seed(0)).to(device)
    sequential = lambda: [global_lower_bound(f, pool, pairs=1, steps=steps) for _ in range(sequential_pairs)]
    workloads = {"sequential": sequential, **{p: (lambda p=p: global_lower_bound(f, pool, pairs=p, steps=steps))
                                              for p in pairs}}
    times = interleaved(workloads, repeats, device)
    base = statistics.median(times["sequential"]) / (sequential_pairs * steps)  # seconds per pair-step
    rows = [{"pairs": "1 (one at a time)", "pair_steps_per_s": 1 / base, "speedup_vs_one_at_a_time": 1.0}]
    for p in pairs:
        speedup = statistics.median(p * t_seq / (sequential_pairs * t)
                                    for t_seq, t in zip(times["sequential"], times[p]))
        rows.append({"pairs": p, "pair_steps_per_s": p * steps / statistics.median(times[p]),
                     "speedup_vs_one_at_a_time": speedup})
    return rows


def scaling(device: torch.device, repeats: int) -> list[dict]:
    """The train ratio, certification ratio and memory ratio against batch size and input size."""
    rows = []
    configs = [(arch, b, None) for arch in ("2C2F", "6C2F") for b in (64, 128, 256, 512, 1024)]
    configs += [("6C2F", 256, (3, s, s)) for s in (28, 32, 64)]
    for arch, batch, shape in configs:
        w = Workload.build(arch, batch, device, input_shape=shape)
        row = {"architecture": arch, "input": _shape(w), "batch": batch,
               **train_row(w, repeats), **cert_row(w, repeats), **memory_row(w)}
        rows.append({k: row[k] for k in ("architecture", "input", "batch", "plain_step_ms", "train_ratio",
                                         "cert_throughput_ratio", "train_mb_ratio", "cert_mb_ratio")})
    return rows


# Figure D.1a's MinMax rows: experiment -> (batches timed, full training-set size, the paper's s/epoch)
EPOCH_CONFIGS = {"mnist_2c2f_minmax": (40, 60_000, 0.9), "cifar10_6c2f_minmax": (8, 50_000, 6.9)}


def _synthetic_dataset(directory: Path, name: str, n: int, shape: tuple[int, ...], classes: int) -> None:
    from gloro_repro.data.arrays import DatasetArrays
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = rng.integers(0, classes, size=n).astype(np.int64)
    DatasetArrays(x, y, x[:1], y[:1], classes=[str(c) for c in range(classes)]).save(directory, name)


def epochs(device: torch.device, repeats: int, params_path: str = "params.yaml") -> list[dict]:
    """A Lightning training epoch of the pipeline (in-memory data, uint8 -> [0, 1], the
    experiment's augmentation, logging) against the bare GloRo forward/backward passes of the same
    batches, prepared beforehand on the device, both in the experiment's float32 precision; and the epoch
    time extrapolated to the full dataset."""
    from gloro_repro.config import load_params
    from gloro_repro.hardware import Hardware
    from gloro_repro.lit.costs import training_costs
    from gloro_repro.lit.datamodule import ArraysDataModule
    from gloro_repro.lit.module import GloroModule
    from gloro_repro.training import build_trainer, precision

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one fit per repeat: keep it quiet
    params = load_params(params_path)
    rows = []
    for name, (batches, train_size, paper_seconds) in EPOCH_CONFIGS.items():
        experiment = params.experiments[name].with_values(warmup=0)
        training, dataset = experiment.training, experiment.data.dataset
        shape, classes = ARCHITECTURES[experiment.model.architecture]
        with tempfile.TemporaryDirectory() as tmp, float32_precision(precision(experiment)):  # as the train stage
            # enough images that the training split (validation carved out) fills ``batches`` batches
            total = -(-batches * training.batch_size // (1 - experiment.data.val_fraction)) + 1
            _synthetic_dataset(Path(tmp), dataset, int(total), shape, classes)
            data = ArraysDataModule(tmp, dataset, training.batch_size, training.augmentation,
                                    val_fraction=experiment.data.val_fraction, seed=training.seed)
            module = GloroModule(experiment.trained_settings(), list(shape), classes)
            bare = copy.deepcopy(module.net).to(device).train()
            optimiser = torch.optim.Adam(bare.parameters(), lr=training.init_lr, eps=1e-7)
            settings = module.schedule.at(0)

            def lightning_epoch() -> float:
                trainer = build_trainer(1, False, Hardware(device.type), training.batch_size, limit_val_batches=0,
                                        enable_checkpointing=False, progress=False)
                trainer.fit(module, data)
                return training_costs(trainer).epoch_seconds[-1]

            lightning_epoch()  # warm-up; also loads the arrays onto the device
            x_all, y_all = data.tensors["train"]
            n = len(x_all)
            prepared = [((x_all[i:i + training.batch_size].float() / data.max_value).to(device),
                         y_all[i:i + training.batch_size].to(device)) for i in range(0, n, training.batch_size)]

            def bare_passes() -> None:
                for x, y in prepared:
                    loss = step_loss(bare, x, y, settings.eps, settings.lam).loss
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()

            bare_epoch = lambda: timed(bare_passes, device)

            bare_epoch()
            pairs = []
            for r in range(repeats):  # alternate which goes first
                if r % 2 == 0:
                    pairs.append((lightning_epoch(), bare_epoch()))
                else:
                    base = bare_epoch()
                    pairs.append((lightning_epoch(), base))
        full, base = (statistics.median(p[i] for p in pairs) for i in (0, 1))
        ratio = statistics.median(a / b for a, b in pairs)
        full_epoch = full / n * train_size
        rows.append({"experiment": name, "batch": training.batch_size, "augmentation": training.augmentation,
                     "images_timed": n, "lightning_epoch_s": full, "bare_epoch_s": base,
                     "epoch_ratio": ratio, "epoch_goal": EPOCH_GOAL, "epoch_met": ratio <= EPOCH_GOAL,
                     "s_per_full_epoch": full_epoch, "paper_s_per_epoch": paper_seconds,
                     "speed_vs_paper": paper_seconds / full_epoch})
    return rows


def profile(device: torch.device, architecture: str = "2C2F", steps: int = 5, top: int = 10) -> list[dict]:
    """Where a GloRo training step spends its time (torch.profiler, self time per operator)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    w = Workload.build(architecture, 256, device)
    for _ in range(2):
        w.gloro_step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            w.gloro_step()
    events = prof.key_averages()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events)
    ranked = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:top]
    return [{"operator": e.key, "self_time_share": getattr(e, attr) / total, "calls_per_step": e.count / steps}
            for e in ranked]


SECTIONS = {"architectures": architectures, "one_off": one_off, "epochs": epochs, "lower_bounds": lower_bounds,
            "scaling": scaling, "profile": lambda device, repeats: profile(device)}
