"""Certify your own inputs with an exported GloRo model.

    python -m pipeline.certify --model models/digits_minmax --input X.npz [--eps E] [--bound sound] --out out.csv

``X.npz`` holds ``x`` (float in [0, 1], or uint8 in [0, 255], shaped ``[N, C, H, W]``) and
optionally ``y``. Uses only the model folder's ``model.pt2`` and ``lipschitz.json``. Writes one
row per input: predicted class, certified (bool), certified radius, and the label if given.
A prediction is certified at radius eps when ``f_j(x) > max_{i != j} f_i(x) + eps * K_ji``; with
the default provable bound, f runs in float64 and the margins are reduced by its rounding bound.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from pipeline.artifacts import load_exported
from pipeline.gloro.model import batched_logits, certify_float64, certify_logits
from pipeline.io import atomic_open


def model_folder(path: Path) -> Path:
    """``models/<experiment>`` means its validation-selected model, ``models/<experiment>/best``."""
    if (path / "model.pt2").exists():
        return path
    if (path / "best" / "model.pt2").exists():
        return path / "best"
    raise FileNotFoundError(f"--model {path}: no model.pt2 in it or in {path / 'best'}; run `dvc repro` first")


def read_inputs(path: Path, input_shape: list[int]) -> tuple[torch.Tensor, np.ndarray | None]:
    with np.load(path) as data:
        if "x" not in data:
            raise ValueError(f"--input {path}: no array 'x' (found {list(data.keys())})")
        x, y = data["x"], data["y"] if "y" in data else None
    x = torch.from_numpy(x.astype(np.float32) / 255 if x.dtype == np.uint8 else x.astype(np.float32))
    if list(x.shape[1:]) != list(input_shape):
        raise ValueError(f"--input {path}: x has shape {list(x.shape)}, expected [N, {', '.join(map(str, input_shape))}]")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"--input {path}: x has values in [{x.min():.3g}, {x.max():.3g}], expected [0, 1]")
    return x, y


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="models/<experiment>, or a folder with model.pt2")
    parser.add_argument("--input", type=Path, required=True, help=".npz with x [N, C, H, W] (and optionally y)")
    parser.add_argument("--eps", type=float, default=None, help="L2 radius (default: the model's eps)")
    parser.add_argument("--bound", choices=("power", "sound"), default="sound",
                        help="sound (default): provable K, float64 forward pass with its rounding error bounded; "
                             "power: the paper's certificate, K from converged power iteration, float32")
    parser.add_argument("--out", type=Path, required=True, help="output CSV")
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        folder = model_folder(args.model)
        f, lipschitz = load_exported(folder)
        x, y = read_inputs(args.input, lipschitz["input_shape"])
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    eps = lipschitz["eps"] if args.eps is None else args.eps
    if not eps > 0:
        print(f"error: --eps must be > 0, got {eps}", file=sys.stderr)
        return 1
    if args.bound == "sound":  # provable: float64 forward pass, its rounding bounded, provable K
        cert = certify_float64(f, x, torch.tensor(lipschitz["K_sound"]), eps,
                               torch.tensor(lipschitz["rounding_float64"]), args.batch_size)
    else:  # the paper's certificate: float32, converged power iteration
        cert = certify_logits(batched_logits(f, x, args.batch_size), torch.tensor(lipschitz["K"]), eps)
    with atomic_open(args.out, "w") as handle:
        handle.write("index,prediction,certified,radius" + (",label\n" if y is not None else "\n"))
        for i in range(len(x)):
            row = f"{i},{int(cert.prediction[i])},{bool(cert.certified[i])},{float(cert.radius[i]):.6g}"
            handle.write(row + (f",{int(y[i])}\n" if y is not None else "\n"))
    print(f"{int(cert.certified.sum())}/{len(x)} certified at eps {eps} ({args.bound} bound) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
