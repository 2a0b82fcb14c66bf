"""Your own data from params.yaml alone: an npz archive and an image folder are prepared like the
paper's datasets and run through the whole DVC pipeline; bad data is refused, naming the file and
what was expected, before anything is written."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from conftest import ROOT, tiny_params
from PIL import Image
from test_dvc import _dvc

from gloro_repro.config import ConfigError, parse_params
from gloro_repro.data.own import BadDataError, read_imagefolder, read_npz
from gloro_repro.stages import prepare


def npz_data(path, classes=5, size=12, per_class=40, **changes):
    """Grayscale ``[N, H, W]`` uint8 images whose brightness pattern depends on the class."""
    rng = np.random.default_rng(0)
    def split(n):
        y = np.repeat(np.arange(classes), n)
        rows = np.linspace(0, 1, size)[None, :, None] * (y[:, None, None] + 1) / classes
        x = np.clip(rows * 255 + rng.normal(0, 20, (len(y), size, size)), 0, 255).astype(np.uint8)
        return x, y
    (x_train, y_train), (x_test, y_test) = split(per_class), split(per_class // 4)
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test) | changes
    np.savez(path, **arrays)
    return path


def image_folder(root, classes=("cat", "dog", "eel"), size=16, train=12, test=4):
    """RGB PNGs: each class has its own dominant colour channel."""
    rng = np.random.default_rng(1)
    for split, n in (("train", train), ("test", test)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 80, (size, size, 3))
                pixels[..., c] += 150
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


def test_an_npz_archive_is_read_in_the_layout_numpy_users_have(tmp_path):
    data = read_npz(npz_data(tmp_path / "mine.npz"))
    assert data.x_train.shape == (200, 1, 12, 12) and data.classes == ["0", "1", "2", "3", "4"]
    assert data.metadata["source"]["sha256"] and data.max_value == 255
    rgb = np.random.default_rng(0).integers(0, 255, (6, 5, 7, 3)).astype(np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1])
    np.savez(tmp_path / "rgb.npz", x_train=rgb, y_train=labels, x_test=rgb[:2], y_test=labels[:2])
    data = read_npz(tmp_path / "rgb.npz")
    assert data.x_train.shape == (6, 3, 5, 7) and np.array_equal(data.x_train[2, 1], rgb[2, :, :, 1])


def test_an_image_folder_keeps_its_class_names(tmp_path):
    data = read_imagefolder(image_folder(tmp_path / "pets"))
    assert data.x_train.shape == (36, 3, 16, 16) and data.x_test.shape == (12, 3, 16, 16)
    assert data.classes == ["cat", "dog", "eel"] and data.metadata["source"]["files"] == 48
    assert (data.x_train[data.y_train == 2][:, 2].mean() > data.x_train[data.y_train == 2][:, 0].mean() + 100)


def _bad_npz(tmp_path, **changes):
    return npz_data(tmp_path / "bad.npz", **changes)


BAD_NPZ = {
    "labels with a gap": (dict(y_train=np.repeat([0, 1, 3, 4, 5], 40)),
                          r"expected every class 0\.\.5 \(missing \[2\]\)"),
    "negative labels": (dict(y_train=np.repeat([-1, 0, 1, 2, 3], 40)), "y_train labels in \\[-1, 3\\]"),
    "test labels beyond the classes": (dict(y_test=np.repeat([0, 1, 2, 3, 7], 10)), "y_test labels in \\[0, 7\\]"),
    "mismatched lengths": (dict(y_train=np.repeat(np.arange(5), 39)), r"y_train: shape \[195\], expected \[200\]"),
    "NaN": (dict(x_test=np.full((50, 12, 12), np.nan, dtype=np.float32)), "x_test: contains NaN"),
    "float pixels": (dict(x_train=np.zeros((200, 12, 12), np.float32)), "x_train: dtype float32, expected uint8"),
    "float labels": (dict(y_train=np.zeros(200, np.float64)), "y_train: dtype float64, expected integer"),
    "an empty split": (dict(x_test=np.zeros((0, 12, 12), np.uint8), y_test=np.zeros(0, np.int64)),
                       "x_test: empty split"),
    "test images of another size": (dict(x_test=np.zeros((50, 10, 12), np.uint8)), r"x_test images have shape"),
    "a flat array": (dict(x_train=np.zeros((200, 144), np.uint8)), r"expected \[N, H, W\] or \[N, H, W, C\]"),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_bad_npz_data_is_refused_naming_the_file(tmp_path, case):
    changes, message = BAD_NPZ[case]
    path = _bad_npz(tmp_path, **changes)
    with pytest.raises(BadDataError, match=f"{path}.*{message}"):
        read_npz(path)


def test_an_npz_without_the_arrays_or_not_an_archive_is_refused(tmp_path):
    np.savez(tmp_path / "x.npz", images=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(BadDataError, match=r"missing arrays \['x_train', 'y_train', 'x_test', 'y_test'\]"):
        read_npz(tmp_path / "x.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BadDataError, match="junk.npz: not a readable npz archive"):
        read_npz(tmp_path / "junk.npz")


def test_bad_image_folders_are_refused_naming_the_file(tmp_path):
    root = image_folder(tmp_path / "mixed")
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(root / "train/dog/odd.png")
    with pytest.raises(BadDataError, match=r"odd.png: image of shape \[12, 16, 3\].*expected one size"):
        read_imagefolder(root)
    root = image_folder(tmp_path / "broken")
    (root / "test/cat/3.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(BadDataError, match="test/cat/3.png: unreadable image"):
        read_imagefolder(root)
    root = image_folder(tmp_path / "empty")
    (root / "train/fox").mkdir()
    with pytest.raises(BadDataError, match="train/fox: a class folder with no images"):
        read_imagefolder(root)
    with pytest.raises(BadDataError, match="nowhere/train: no such folder"):
        read_imagefolder(tmp_path / "nowhere")


def test_the_prepare_stage_writes_nothing_on_bad_data(tmp_path, capsys):
    params = tiny_params() | {"sources": {"mine": {"npz": str(_bad_npz(tmp_path, y_train=np.zeros(200, np.float64)))},
                                          "other": None}}
    with pytest.raises(ConfigError, match="sources.other: got None; a dataset of your own is declared"):
        parse_params(params)
    del params["sources"]["other"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "prepared"
    assert prepare.main(["mine", "--params", str(tmp_path / "params.yaml"), "--out", str(out)]) == 1
    assert "y_train: dtype float64, expected integer class labels" in capsys.readouterr().err and not out.exists()
    assert prepare.main(["unknown", "--params", str(tmp_path / "params.yaml"), "--out", str(out)]) == 2
    assert "unknown dataset 'unknown'" in capsys.readouterr().err and not out.exists()


@pytest.fixture(scope="module")
def own_project(tmp_path_factory):
    """A copy of the project whose params.yaml declares an npz dataset (5 classes, 12x12 grayscale)
    and an image folder (3 classes, 16x16 RGB PNGs), after a complete ``dvc repro``."""
    project = tmp_path_factory.mktemp("own_data")
    shutil.copytree(ROOT / "gloro_repro", project / "gloro_repro", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, project / name)
    npz_data((project / "mine.npz"))
    image_folder(project / "pets")
    params = tiny_params(epochs=2)
    tiny = params["experiments"]["tiny"]
    experiment = lambda dataset, spec: tiny | {"data": {"dataset": dataset, "val_fraction": 0.1},
                                               "model": tiny["model"] | {"architecture": spec}}
    params |= {"run": ["own_npz", "own_folder"], "datasets": ["mine", "pets"],
               "sources": {"mine": {"npz": "mine.npz"}, "pets": {"imagefolder": "pets"}},
               "experiments": params["experiments"] | {"own_npz": experiment("mine", "c8k3s2-d5"),
                                                       "own_folder": experiment("pets", "c8k3s2-d3")}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert _dvc(project, "init", "--no-scm", "-q").returncode == 0
    result = _dvc(project, "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return project


def test_own_datasets_run_through_the_pipeline_to_a_provable_certificate_and_a_table_row(own_project, report):
    lines = []
    for experiment, dataset, shape, classes in (("own_npz", "mine", [1, 12, 12], [str(i) for i in range(5)]),
                                                ("own_folder", "pets", [3, 16, 16], ["cat", "dog", "eel"])):
        meta = json.loads((own_project / f"data/{dataset}/{dataset}.json").read_text())
        assert meta["classes"] == classes and meta["source"]["sha256"]
        cert = json.loads((own_project / f"results/certification/{experiment}.json").read_text())
        assert 0 <= cert["vra_sound"] <= cert["clean"] <= 1
        lipschitz = json.loads((own_project / f"models/{experiment}/best/lipschitz.json").read_text())
        assert lipschitz["input_shape"] == shape and lipschitz["classes"] == classes
        lines.append(f"{experiment} ({dataset}): clean {cert['clean']:.3f}, VRA {cert['vra']:.3f}, provable VRA "
                     f"{cert['vra_sound']:.3f}")
    table = (own_project / "results/table_D1a.md").read_text()
    assert "| mine (0.3)" in table and "| pets (0.3)" in table
    report("own data through dvc repro (2 epochs): " + "; ".join(lines))
