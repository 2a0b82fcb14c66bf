"""Certify your own inputs with an exported GloRo model.

    python -m gloro_repro.certify --model models/digits_minmax --input X.npz [--eps E] [--bound sound] --out out.csv

``X.npz`` holds ``x``, shaped ``[N, C, H, W]`` like the model's input: floats in [0, 1], or uint8
images on the scale of the model's training data (recorded in ``lipschitz.json``: 255, or 16 for
scikit-learn's digits; --max-value overrides it), and optionally ``y``, integer labels. Other
array names: --x-key / --y-key (the pipeline's own data/<dataset>/<dataset>.npz: --x-key x_test
--y-key y_test). Uses only the model folder's ``model.pt2`` and ``lipschitz.json``, and refuses a
pair that was not exported together. Writes one row per input: predicted class (and its name,
when the export records the class names), certified (bool), certified radius, and the label if
given. A prediction is certified at radius eps when ``f_j(x) > max_{i != j} f_i(x) + eps * K_ji``;
with the default provable bound, f runs in float64 and the margins are reduced by its rounding bound.

Every input is checked before any work; a bad one exits 2 with a message saying what was found
and what is expected, and nothing is written. Runs on the ``GLORO_ACCELERATOR`` device (default:
a CUDA GPU when there is one), in IEEE arithmetic (``gloro_repro.exported.ExportedModel.certify``).
"""
from __future__ import annotations

import argparse
import math
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from gloro_repro.console import quiet_libraries
from gloro_repro.exported import ExportedModel, ExportError
from gloro_repro.gloro.model import BOUNDS
from gloro_repro.hardware import Hardware, HardwareError, use_threads
from gloro_repro.io import atomic_open


class InputError(ValueError):
    """A command-line input that breaks the contract in the module docstring."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {value}, expected an integer >= 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"got {text}, expected a finite number > 0")
    return value


def read_arrays(path: Path, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` and (if present) ``y`` from an ``.npz`` archive."""
    if not path.is_file():
        raise InputError(f"--input {path}: no such file")
    if path.suffix == ".npy":
        raise InputError(f"--input {path}: a .npy array; expected an .npz archive holding '{x_key}' (and optionally "
                         f"'{y_key}'): numpy.savez('X.npz', {x_key}=numpy.load('{path.name}'))")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise InputError(f"--input {path}: not a readable .npz archive ({type(error).__name__}: {error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"--input {path}: a single .npy array; expected an .npz archive holding '{x_key}'")
    with archive:
        keys = list(archive.keys())
        if x_key not in keys:
            hint = (" This is a prepared dataset: use --x-key x_test --y-key y_test, with --max-value from its "
                    ".json (16 for digits, 255 otherwise)." if "x_test" in keys else "")
            raise InputError(f"--input {path}: no array '{x_key}' (found {keys}).{hint}")
        try:
            return archive[x_key], (archive[y_key] if y_key in keys else None)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
            raise InputError(f"--input {path}: array unreadable ({type(error).__name__}: {error})") from None


def scaled_inputs(x: np.ndarray, input_shape: list[int], max_value: int | None, where: str) -> torch.Tensor:
    """``x`` as float32 in [0, 1], after checking its dtype, shape and values."""
    expected = f"[N, {', '.join(map(str, input_shape))}]"
    if x.ndim != 4 or list(x.shape[1:]) != list(input_shape):
        raise InputError(f"{where}: shape {list(x.shape)}, expected {expected}")
    if len(x) == 0:
        raise InputError(f"{where}: no inputs (shape {list(x.shape)})")
    if x.dtype == np.uint8:
        if max_value is None:
            if x.max() <= 16:
                raise InputError(f"{where}: uint8 values only in [{x.min()}, {x.max()}]: as 0..255 images these are "
                                 "almost black. Pass --max-value with the scale they use (16 for scikit-learn's "
                                 "digits), or --max-value 255 if they really are 0..255 images")
            max_value = 255
        if x.max() > max_value:
            raise InputError(f"{where}: uint8 values up to {x.max()}, above --max-value {max_value}")
        return torch.from_numpy(x.astype(np.float32) / max_value)
    if max_value is not None:
        raise InputError(f"{where}: --max-value applies to uint8 images, but x is {x.dtype}")
    if x.dtype.kind != "f":
        raise InputError(f"{where}: dtype {x.dtype}; expected floats in [0, 1] or uint8 images in 0..255")
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))
        raise InputError(f"{where}: {len(rows)} input(s) hold NaN or Inf (first: index {rows[0]}); expected finite "
                         "values in [0, 1]")
    if x.min() < 0 or x.max() > 1:
        raise InputError(f"{where}: values in [{x.min():.4g}, {x.max():.4g}], expected [0, 1]")
    return torch.from_numpy(x.astype(np.float32))


def checked_labels(y: np.ndarray | None, n: int, classes: int, where: str) -> np.ndarray | None:
    if y is None:
        return None
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"{where}: shape {list(y.shape)}, expected [{n}] (one label per input of x)")
    if y.dtype.kind not in "iu":
        raise InputError(f"{where}: dtype {y.dtype}, expected integer class labels")
    if y.min() < 0 or y.max() >= classes:
        raise InputError(f"{where}: labels in [{y.min()}, {y.max()}], expected [0, {classes - 1}]")
    return y


def _csv_field(text: str) -> str:
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text


def checked_output(path: Path) -> Path:
    """The CSV path: not a folder, inside a folder that exists (nothing is created outside it)."""
    if path.is_dir():
        raise InputError(f"--out {path}: a folder; expected a file path such as {path / 'certified.csv'}")
    if not path.parent.is_dir():
        raise InputError(f"--out {path}: the folder {path.parent} does not exist; create it first")
    return path


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gloro-certify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="models/<experiment>, or a folder with model.pt2")
    parser.add_argument("--input", type=Path, required=True, help=".npz with x [N, C, H, W] (and optionally y)")
    parser.add_argument("--x-key", default="x", help="name of the inputs in the .npz (default: x)")
    parser.add_argument("--y-key", default="y", help="name of the optional labels in the .npz (default: y)")
    parser.add_argument("--max-value", type=_positive_int, default=None,
                        help="uint8 inputs are divided by this (default: the scale of the data the model was "
                             "trained on, recorded in lipschitz.json; else 255)")
    parser.add_argument("--eps", type=_positive_float, default=None, help="L2 radius (default: the model's eps)")
    parser.add_argument("--bound", choices=BOUNDS, default="sound",
                        help="sound (default): provable K, float64 forward pass with its rounding error bounded; "
                             "power: the paper's certificate, K from converged power iteration, float32")
    parser.add_argument("--out", type=Path, required=True, help="output CSV (its folder must exist)")
    parser.add_argument("--batch-size", type=_positive_int, default=1000, help="inputs per forward pass (default 1000)")
    return parser


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    quiet_libraries()
    try:
        out = checked_output(args.out)
        if not ((args.model / "model.pt2").exists() or (args.model / "best" / "model.pt2").exists()):
            raise InputError(f"--model {args.model}: no model.pt2 in it or in {args.model / 'best'}; "
                             "run `dvc repro` first")
        model = ExportedModel.load(args.model)  # models/<experiment> means its selected model, best/
        x, y = read_arrays(args.input, args.x_key, args.y_key)
        max_value = args.max_value if args.max_value is not None or x.dtype != np.uint8 else model.info.get("max_value")
        x = scaled_inputs(x, model.input_shape, max_value, f"--input {args.input}: {args.x_key}")
        y = checked_labels(y, len(x), model.num_classes, f"--input {args.input}: {args.y_key}")
        hardware = Hardware.from_env()
        use_threads(hardware)
        device = hardware.device()
    except (InputError, ExportError, HardwareError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    eps = model.eps if args.eps is None else args.eps
    cert = model.to(device).certify(x.to(device), eps, args.bound, args.batch_size)
    prediction, certified, radius = (t.tolist() for t in (cert.prediction, cert.certified, cert.radius))
    classes = model.info.get("classes")  # the prepared data's class names, when the export records them
    with atomic_open(out, "w") as handle:
        handle.write("index,prediction," + ("class," if classes else "") + "certified,radius"
                     + (",label\n" if y is not None else "\n"))
        for i in range(len(x)):
            name = f"{_csv_field(classes[prediction[i]])}," if classes else ""
            row = f"{i},{prediction[i]},{name}{certified[i]},{radius[i]:.6g}"
            handle.write(row + (f",{int(y[i])}\n" if y is not None else "\n"))
    scores = ""
    if y is not None:
        correct = cert.prediction == torch.as_tensor(y, device=device)
        scores = (f"; with the labels: clean accuracy {correct.float().mean():.4f}, "
                  f"VRA {(cert.certified & correct).float().mean():.4f}")
    print(f"{int(cert.certified.sum())}/{len(x)} certified at eps {eps} ({args.bound} bound, on {device}){scores} "
          f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
