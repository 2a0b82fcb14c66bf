"""The authors' library (PyPI ``gloro`` 1.1.1) on the MNIST t10k proxy: the yardstick for
``benchmarks.parity``. Not a project dependency: run it in a scratch environment of its own.

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu==2.15.1 gloro==1.1.1 "numpy<2"
    /tmp/tfvenv/bin/python benchmarks/parity_library.py --seeds 0 1 2 3 4   # appends to results/parity_library.csv

The recipe: images 0-7999 of the genuine MNIST test set train, 8000-9999 test, pixels / 255;
2C2F with the library's MinMax, Keras Orthogonal initialisation given as the string
``'orthogonal'`` to every layer, as the authors' training scripts do, so each layer draws its own
matrix (``--init shared``: one unseeded ``Orthogonal()`` instance passed to all four layers, which
Keras 2.15 warns returns the same draw on every call; this script's first yardstick, kept as an
arm); GloroNet(eps_train, 5 power iterations); the ``sparse_trades_kl.2.0`` loss with
``TradesScheduler('linear_from_0.1')``, ``EpsilonScheduler('fixed')``,
``LrScheduler('decay_after_half_to_0.000001')``; Adam 1e-3; batch 512; 30 epochs (``--epochs``,
``--eps-train`` for the longer setting). Reported for the last epoch, at eps 0.3:

* ``vra_library``: the library's own evaluation (``model.evaluate`` with its ``vra`` metric, the
  unfrozen path: its end-of-training refresh converges the iterates to an absolute change of 1e-4
  in the global bound, and every evaluated batch runs 5 more iterations);
* ``vra_tight``: the same weights with fresh iterates converged far further (chunks of 1,000
  iterations until the global bound changes by under 1e-5, at most 200 chunks), close to the
  bound the project certifies with.

``--paired DIR`` starts each seed from what ``benchmarks.parity --export-paired DIR`` wrote: the
project's initial weights for that seed (checked: the library's logits match the project's) and its
batch order for every epoch, so the two implementations share their random draws (``init``:
``paired``); the library's own iterate refreshes stay as they are.

Appends one row per run to ``--out`` (a CSV; ``init`` names the arm). ``--threads`` caps
TensorFlow's threads, so two runs can share two cores.
"""
from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as handle:
        data = handle.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, default=Path("../shared/data/mnist"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--eps-train", type=float, default=0.3)
    parser.add_argument("--init", choices=("per_layer", "shared"), default="per_layer",
                        help="'orthogonal' per layer (the authors' scripts) or one shared Orthogonal() instance")
    parser.add_argument("--paired", type=Path, default=None, metavar="DIR",
                        help="start from benchmarks.parity --export-paired DIR: the project's weights and batch order")
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow's intra- and inter-op threads")
    parser.add_argument("--out", type=Path, default=Path("results/parity_library.csv"))
    args = parser.parse_args()

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    for seed in args.seeds:
        run(args, seed)


def run(args: argparse.Namespace, seed: int) -> None:
    """Train and evaluate one seed; append its row to ``args.out``."""
    import tensorflow as tf
    from gloro.layers import MinMax
    from gloro.models import GloroNet
    from gloro.training.callbacks import EpsilonScheduler, LrScheduler, TradesScheduler
    from tensorflow.keras.layers import Conv2D, Dense, Flatten, Input

    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(seed)
    x = read_idx(args.mnist / "t10k-images-idx3-ubyte.gz").astype("float32")[..., None] / 255
    y = read_idx(args.mnist / "t10k-labels-idx1-ubyte.gz").astype("int64")
    x_train, y_train, x_test, y_test = x[:8000], y[:8000], x[8000:], y[8000:]

    arm = "paired" if args.paired else args.init
    init = tf.keras.initializers.Orthogonal() if arm == "shared" else "orthogonal"
    inputs = Input((28, 28, 1))
    z = MinMax()(Conv2D(16, 4, strides=2, padding="same", kernel_initializer=init)(inputs))
    z = MinMax()(Conv2D(32, 4, strides=2, padding="same", kernel_initializer=init)(z))
    z = MinMax()(Dense(100, kernel_initializer=init)(Flatten()(z)))
    outputs = Dense(10, kernel_initializer=init)(z)
    model = GloroNet(inputs, outputs, args.eps_train, num_iterations=5)
    model.compile(loss="sparse_trades_kl.2.0", optimizer=tf.keras.optimizers.Adam(1e-3),
                  metrics=["clean_acc", "vra"])
    callbacks = [EpsilonScheduler("fixed"), TradesScheduler("linear_from_0.1"),
                 LrScheduler("decay_after_half_to_0.000001")]
    start = time.perf_counter()
    if args.paired:
        paired = np.load(args.paired / f"seed{seed}.npz")
        model.f.set_weights([paired[f"w{i}"] for i in range(len(model.f.get_weights()))])
        gap = float(np.abs(model.f(x_train[:64]).numpy() - paired["logits"]).max())
        if gap > 1e-4:
            raise SystemExit(f"the library's logits differ from the project's by {gap:.2e}: weights mapped wrongly")
        orders = paired["orders"][:args.epochs]
        served = []

        def batches():
            for order in orders:
                for b in range(0, len(order), 512):
                    served.append(b)
                    yield x_train[order[b:b + 512]], y_train[order[b:b + 512]]

        steps = -(-len(x_train) // 512)
        data = tf.data.Dataset.from_generator(batches, output_signature=(
            tf.TensorSpec((None, 28, 28, 1), tf.float32), tf.TensorSpec((None,), tf.int64)))
        model.fit(data, epochs=args.epochs, steps_per_epoch=steps, verbose=2, callbacks=callbacks)
        if len(served) != steps * args.epochs:
            raise SystemExit(f"the library trained on {len(served)} batches, not {steps * args.epochs}")
        print(f"paired start: logits within {gap:.1e} of the project's; {len(served)} batches in the project's order")
    else:
        model.fit(x_train, y_train, batch_size=512, epochs=args.epochs, verbose=2, callbacks=callbacks)
    seconds = time.perf_counter() - start
    model.epsilon = 0.3
    _, clean, vra_library = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    k_library = float(model.lipschitz_constant().numpy().max())
    model.refresh_iterates(convergence_threshold=1e-5, max_tries=200, batch_size=1000)
    model.freeze_lipschitz_constant(converge=False)
    _, clean_tight, vra_tight = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    k_tight = float(model.lipschitz_constant().numpy().max())
    row = (f"{arm},{seed},{args.epochs},{args.eps_train},{clean:.4f},{vra_library:.4f},{vra_tight:.4f},"
           f"{k_library:.6f},{k_tight:.6f},{seconds:.0f}\n")
    new = not args.out.exists()
    with open(args.out, "a") as handle:
        if new:
            handle.write("init,seed,epochs,eps_train,clean,vra_library,vra_tight,max_K_library,max_K_tight,seconds\n")
        handle.write(row)
    print(row, end="")


if __name__ == "__main__":
    main()
