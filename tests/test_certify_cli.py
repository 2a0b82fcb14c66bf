"""``python -m gloro_repro.certify`` refuses every input it cannot certify honestly: a model whose bounds
belong to another model, and bad arrays or arguments, each with exit 2, a message saying what was
found and what is expected, no traceback and nothing written."""
from __future__ import annotations

import json
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from conftest import PARAMS, ROOT

from gloro_repro import certify
from gloro_repro.artifacts import build_gloro, export_converged
from gloro_repro.config import load_params
from gloro_repro.data import sources
from gloro_repro.stages import prepare


def _export(directory: Path, name: str) -> Path:
    """An untrained but converged digits model of experiment ``name``, exported as the pipeline does."""
    experiment = load_params(PARAMS).experiment(name)
    net = build_gloro(experiment, (1, 8, 8), 10)
    net.converge(1e-5)
    export_converged(net, experiment, {"input_shape": [1, 8, 8], "num_classes": 10, "epoch": 0}, directory)
    return directory


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return _export(root / "minmax", "digits_minmax"), _export(root / "relu", "digits_relu_ce")


@pytest.fixture
def inputs(tmp_path, digits):
    _, _, x, y = digits
    np.savez(tmp_path / "X.npz", x=x[:60].numpy(), y=y[:60].numpy())
    return tmp_path / "X.npz"


def run(args: list[str], capsys) -> tuple[int, str]:
    try:
        code = certify.main([str(a) for a in args])
    except SystemExit as exit:  # argparse's own refusals
        code = exit.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_certifies_good_inputs(models, inputs, tmp_path, capsys):
    out = tmp_path / "out.csv"
    code, _ = run(["--model", models[0], "--input", inputs, "--out", out], capsys)
    assert code == 0 and len(out.read_text().splitlines()) == 61


def test_the_summary_gives_clean_accuracy_and_vra_when_labels_are_given(models, inputs, tmp_path, capsys):
    out = tmp_path / "out.csv"
    code = certify.main([str(a) for a in ["--model", models[0], "--input", inputs, "--out", out]])
    rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
    correct = [r[1] == r[-1] for r in rows]
    vra = sum(c and r[-3] == "True" for c, r in zip(correct, rows)) / len(rows)
    summary = capsys.readouterr().out
    assert code == 0 and f"clean accuracy {sum(correct) / len(rows):.4f}, VRA {vra:.4f}" in summary


def test_exported_model_load_takes_an_experiments_folder_as_its_selected_model(models, tmp_path):
    from gloro_repro.exported import ExportedModel

    shutil.copytree(models[0], tmp_path / "experiment" / "best")
    assert ExportedModel.load(tmp_path / "experiment").info == ExportedModel.load(models[0]).info


def test_bounds_of_another_model_are_refused_and_certify_nothing(models, inputs, tmp_path, capsys):
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    shutil.copy(models[0] / "model.pt2", swapped / "model.pt2")
    shutil.copy(models[1] / "lipschitz.json", swapped / "lipschitz.json")
    out = tmp_path / "out.csv"
    code, err = run(["--model", swapped, "--input", inputs, "--out", out], capsys)
    assert code == 2 and not out.exists()
    assert f"{swapped / 'lipschitz.json'} belongs to another model than {swapped / 'model.pt2'}" in err


def _corrupt_model(folder: Path) -> None:
    data = (folder / "model.pt2").read_bytes()
    (folder / "model.pt2").write_bytes(data[: len(data) // 2])


def _bad_json(folder: Path) -> None:
    (folder / "lipschitz.json").write_text('{"eps": 0.3, "K": [')


def _other_weights(folder: Path) -> None:
    lipschitz = json.loads((folder / "lipschitz.json").read_text())
    (folder / "lipschitz.json").write_text(json.dumps(lipschitz | {"weights_sha256": "0" * 64}))


def _no_digest(folder: Path) -> None:
    lipschitz = json.loads((folder / "lipschitz.json").read_text())
    del lipschitz["model_pt2_sha256"]
    (folder / "lipschitz.json").write_text(json.dumps(lipschitz))


@pytest.mark.parametrize("damage, message", [
    (_corrupt_model, "model.pt2: not a readable torch.export program"),
    (_bad_json, "lipschitz.json: not valid JSON"),
    (_other_weights, "lipschitz.json was computed from other weights than those in"),
    (_no_digest, "lipschitz.json: missing ['model_pt2_sha256']"),
    (lambda folder: (folder / "lipschitz.json").unlink(), "lipschitz.json: not found"),
])
def test_damaged_model_files_are_refused(models, inputs, tmp_path, capsys, damage, message):
    folder = tmp_path / "model"
    shutil.copytree(models[0], folder)
    damage(folder)
    out = tmp_path / "out.csv"
    code, err = run(["--model", folder, "--input", inputs, "--out", out], capsys)
    assert code == 2 and message in err and not out.exists()


def _save(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


X = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
NAN = X.copy()
NAN[3, 0, 2, 2] = np.nan
DIGITS_UINT8 = (X * 16).round().astype(np.uint8)

BAD_INPUTS = {  # name: (input file maker, extra args, message)
    "empty array": (lambda d: _save(d / "i.npz", x=X[:0]), [], "no inputs (shape [0, 1, 8, 8])"),
    "y shorter than x": (lambda d: _save(d / "i.npz", x=X, y=np.arange(3)), [],
                         "y: shape [3], expected [5] (one label per input of x)"),
    "labels out of range": (lambda d: _save(d / "i.npz", x=X, y=np.array([0, 1, 2, 3, 12])), [],
                            "y: labels in [0, 12], expected [0, 9]"),
    "float labels": (lambda d: _save(d / "i.npz", x=X, y=np.zeros(5)), [], "expected integer class labels"),
    "NaN": (lambda d: _save(d / "i.npz", x=NAN), [], "1 input(s) hold NaN or Inf (first: index 3)"),
    "values above 1": (lambda d: _save(d / "i.npz", x=X * 255), [], "expected [0, 1]"),
    "wrong shape": (lambda d: _save(d / "i.npz", x=X[:, :, :4]), [], "shape [5, 1, 4, 8], expected [N, 1, 8, 8]"),
    "no channel axis": (lambda d: _save(d / "i.npz", x=X[:, 0]), [], "shape [5, 8, 8], expected [N, 1, 8, 8]"),
    "int64 pixels": (lambda d: _save(d / "i.npz", x=DIGITS_UINT8.astype(np.int64)), [],
                     "dtype int64; expected floats in [0, 1] or uint8 images in 0..255"),
    "uint8 on digits' 0..16 scale": (lambda d: _save(d / "i.npz", x=DIGITS_UINT8), [],
                                     "Pass --max-value with the scale they use (16 for scikit-learn's digits)"),
    "uint8 above --max-value": (lambda d: _save(d / "i.npz", x=DIGITS_UINT8 + 20), ["--max-value", "16"],
                                "above --max-value 16"),
    "no array x": (lambda d: _save(d / "i.npz", images=X), [], "no array 'x' (found ['images'])"),
    "a prepared dataset": (lambda d: _save(d / "digits.npz", x_train=DIGITS_UINT8, y_train=np.zeros(5, np.int64),
                                           x_test=DIGITS_UINT8, y_test=np.zeros(5, np.int64)), [],
                           "use --x-key x_test --y-key y_test, with --max-value"),
    ".npy input": (lambda d: (np.save(d / "i.npy", X), d / "i.npy")[1], [], "a .npy array; expected an .npz archive"),
    ".npy named .npz": (lambda d: (np.save(d / "i.npy", X), (d / "i.npy").rename(d / "i.npz"), d / "i.npz")[2], [],
                        "a single .npy array; expected an .npz archive"),
    "not an archive": (lambda d: ((d / "i.npz").write_bytes(b"PK\x03\x04 not a zip"), d / "i.npz")[1], [],
                       "not a readable .npz archive"),
    "missing input": (lambda d: d / "absent.npz", [], "absent.npz: no such file"),
    "--batch-size 0": (lambda d: _save(d / "i.npz", x=X), ["--batch-size", "0"],
                       "argument --batch-size: got 0, expected an integer >= 1"),
    "--eps nan": (lambda d: _save(d / "i.npz", x=X), ["--eps", "nan"], "argument --eps: got nan, expected a finite"),
    "--eps -0.3": (lambda d: _save(d / "i.npz", x=X), ["--eps=-0.3"], "argument --eps: got -0.3"),
    "--max-value on floats": (lambda d: _save(d / "i.npz", x=X), ["--max-value", "255"],
                              "--max-value applies to uint8 images, but x is float32"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_are_refused_before_any_work(models, tmp_path, capsys, name):
    make, extra, message = BAD_INPUTS[name]
    source = make(tmp_path)
    out = tmp_path / "out.csv"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = run(["--model", models[0], "--input", source, "--out", out, *extra], capsys)
    assert code == 2 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing written"


@pytest.mark.parametrize("out, message", [
    (lambda d: d, "a folder; expected a file path"),
    (lambda d: d / "no" / "such" / "dir" / "out.csv", "does not exist; create it first"),
])
def test_bad_output_paths_are_refused(models, inputs, tmp_path, capsys, out, message):
    target = out(tmp_path)
    code, err = run(["--model", models[0], "--input", inputs, "--out", target], capsys)
    assert code == 2 and message in err and not (tmp_path / "no").exists()


def test_a_missing_model_folder_is_refused(inputs, tmp_path, capsys):
    code, err = run(["--model", tmp_path / "nowhere", "--input", inputs, "--out", tmp_path / "o.csv"], capsys)
    assert code == 2 and "no model.pt2 in it" in err


def test_digits_uint8_with_their_scale_certify_like_floats(models, tmp_path, capsys):
    floats, raw = tmp_path / "f.csv", tmp_path / "u.csv"
    _save(tmp_path / "u.npz", x=DIGITS_UINT8)
    _save(tmp_path / "f.npz", x=DIGITS_UINT8.astype(np.float32) / 16)
    assert run(["--model", models[0], "--input", tmp_path / "u.npz", "--max-value", "16", "--out", raw], capsys)[0] == 0
    assert run(["--model", models[0], "--input", tmp_path / "f.npz", "--out", floats], capsys)[0] == 0
    assert raw.read_text() == floats.read_text()


@pytest.mark.parametrize("failure", [
    urllib.error.URLError("[Errno -2] Name or service not known"),
    RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://...\n<urlopen error timed out>"),
])
def test_an_offline_download_names_the_files_and_the_param(tmp_path, monkeypatch, capsys, failure):
    def offline(*args, **kwargs):
        raise failure

    monkeypatch.setattr(sources.mnist, "MNIST", offline)
    monkeypatch.setattr(sources, "download_url", offline)
    for dataset, files in (("mnist", "train-images-idx3-ubyte.gz"), ("cifar10", "cifar-10-python.tar.gz")):
        code = prepare.main([dataset, "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "dl"),
                             "--params", str(PARAMS)])
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err and not (tmp_path / "out").exists()
        assert f"could not download {dataset} (" in err and files in err
        assert f"sources.{dataset}=" in err and f"prepare {dataset} --from" in err


def test_certify_and_lower_bounds_outputs_survive_a_failed_exp_run():
    """DVC removes the outputs of stages a `dvc exp run -S run=[...]` drops; persist keeps committed results."""
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in ("prepare", "certify", "lower_bounds"):
        for group in ("outs", "metrics", "plots"):
            for entry in stages[stage]["do"].get(group, []):
                (path, options), = entry.items()
                assert options.get("persist"), f"{stage}: {path} should be persist: true"


@pytest.mark.parametrize("command,usage", [("gloro-certify", "usage: gloro-certify [-h] --model MODEL"),
                                           ("gloro-search", "usage: gloro-search [-h] --experiment EXPERIMENT")])
def test_console_scripts_are_installed(command, usage):
    """``pip install -e .`` (requirements.txt) puts the certify CLI and the search on the PATH."""
    import subprocess
    import sys

    script = Path(sys.executable).parent / command
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith(usage)
