"""Short MinMax 2C2F GloRo run on the genuine MNIST test images (issue 3's evidence).

Trains on the first 8,000 t10k images, evaluates on the last 2,000, with Table B.1's 2C2F row
(TRADES 0.1 -> 2.0, LR decay to 1e-6, batch 512, orthogonal init, 5 power iterations) shortened
to ``--epochs``. Prints clean accuracy, VRA under both bounds, PGD accuracy, per-layer
sound-bound / exact-norm ratios, and wall time, as JSON.

    .venv/bin/python -m benchmarks.mnist_2c2f_short --mnist ../shared/data/mnist --epochs 30
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from pipeline.data.mnist import read_mnist_split
from pipeline.gloro import (EpsSchedule, GloroNet, LambdaSchedule, LRSchedule, TrainingSchedule, build_network,
                            clean_accuracy, exact_spectral_norm, pgd_l2, sound_spectral_norm, vra)
from pipeline.gloro.fit import fit
from pipeline.gloro.model import gloro_logits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", default="../shared/data/mnist", help="folder with the original t10k .gz files")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--eps", type=float, default=0.3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x, y = read_mnist_split(args.mnist, "test")
    x = x.float() / 255
    x_train, y_train, x_test, y_test = x[:8000], y[:8000], x[8000:], y[8000:]
    net = GloroNet(build_network("2C2F", (1, 28, 28), 10, "minmax", "orthogonal", seed=0), args.eps, 5)
    schedule = TrainingSchedule(0, EpsSchedule.parse("single", args.eps, args.epochs),
                                LambdaSchedule.parse(f"0.1,2.0,{args.epochs}"),
                                LRSchedule.parse("decay to 1e-6", 1e-3, args.epochs))
    start = time.perf_counter()
    fit(net, x_train, y_train, schedule, batch_size=512)
    train_seconds = time.perf_counter() - start
    with torch.no_grad():
        logits = net.f(x_test)
        vra_power = vra(gloro_logits(logits, net.k_ij(), args.eps), y_test)
        vra_sound = vra(gloro_logits(logits, net.k_ij_sound().float(), args.eps), y_test)
    adv = pgd_l2(net.f, x_test, y_test, args.eps, steps=100, restarts=5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pgd = clean_accuracy(net.f(adv), y_test)
    ratios = [{"layer": repr(layer), "power/exact": layer.lipschitz().item() / exact_spectral_norm(layer),
               "sound/exact": sound_spectral_norm(layer) / exact_spectral_norm(layer)} for layer in net.layers]
    print(json.dumps({
        "epochs": args.epochs, "eps": args.eps, "train_seconds": round(train_seconds, 1),
        "sec_per_epoch": round(train_seconds / args.epochs, 2), "clean": clean_accuracy(logits, y_test),
        "pgd_100x5": pgd, "vra_power": vra_power, "vra_sound": vra_sound,
        "global_ub_power": net.global_lipschitz("power"), "global_ub_sound": net.global_lipschitz("sound"),
        "layers": ratios}, indent=1))


if __name__ == "__main__":
    main()
