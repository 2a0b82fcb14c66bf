"""Dataset sources, verification errors, atomic output, and the in-memory DataModule."""
import gzip
import hashlib
import io
import json
import pickle
import tarfile
import zipfile

import lightning as L
import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg

from gloro_repro.data import cifar10, mnist, tinyimagenet
from gloro_repro.data.arrays import DatasetArrays
from gloro_repro.data.mnist import read_mnist_split
from gloro_repro.data.sources import load_source
from gloro_repro.hardware import HardwareError
from gloro_repro.lit.datamodule import ArraysDataModule, TensorBatches, per_device_batch, split_validation
from gloro_repro.stages import prepare


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_prepare_digits_writes_arrays_and_metadata(tmp_path):
    assert prepare.main(["digits", "--out", str(tmp_path)]) == 0
    data = DatasetArrays.load(tmp_path, "digits")
    assert data.x_train.shape == (1347, 1, 8, 8) and data.x_test.shape == (450, 1, 8, 8)
    assert data.max_value == 16 and data.x_train.max() == 16
    meta = json.loads((tmp_path / "digits.json").read_text())
    assert meta["split"]["seed"] == 0 and len(meta["split"]["test_indices"]) == 450
    counts = np.bincount(data.y_test)
    assert counts.min() >= 43 and counts.max() <= 46  # stratified: 25% of each class, rounded


def test_genuine_mnist_test_split_is_verified_and_read(mnist_dir):
    x, y = read_mnist_split(mnist_dir, "test")
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.uint8
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(y.numpy()).tolist()[:3] == [980, 1135, 1032]


def write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_folder(tmp_path, mnist_dir, monkeypatch):
    """The genuine t10k files beside generated training files (100 images) with patched md5s."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).symlink_to(mnist_dir / name)
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (100, 28, 28)), 2051)
    write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, (100,)), 2049)
    patched = dict(mnist.MD5)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        patched[name] = md5(folder / name)
    monkeypatch.setattr(mnist, "MD5", patched)
    return folder


def test_prepare_mnist_from_folder(mnist_folder, tmp_path):
    out = tmp_path / "out"
    assert prepare.main(["mnist", "--from", str(mnist_folder), "--out", str(out)]) == 0
    data = DatasetArrays.load(out, "mnist")
    assert data.x_train.shape == (100, 1, 28, 28) and data.x_test.shape == (10_000, 1, 28, 28)


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "remove"])
def test_bad_mnist_file_names_file_and_checksum_and_writes_nothing(mnist_folder, tmp_path, capsys, damage):
    target = mnist_folder / "t10k-labels-idx1-ubyte.gz"
    content = target.read_bytes()
    target.unlink()
    if damage == "truncate":
        target.write_bytes(content[: len(content) // 2])
    elif damage == "corrupt":
        target.write_bytes(content[:100] + bytes([content[100] ^ 0xFF]) + content[101:])
    out = tmp_path / "out"
    assert prepare.main(["mnist", "--from", str(mnist_folder), "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert str(target) in error and "ec29112dd5afa0611ce80d1b7f02629c" in error
    assert ("missing" if damage == "remove" else "truncated or corrupt") in error
    assert not out.exists()


def make_cifar_archive(folder, per_batch=4):
    """A tiny archive in the original CIFAR-10 python format: batch k has pixels of value k."""
    path = folder / cifar10.ARCHIVE
    with tarfile.open(path, "w:gz") as tar:
        def add(name, obj):
            data = pickle.dumps(obj)
            info = tarfile.TarInfo(f"{cifar10.FOLDER}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for k, name in enumerate(cifar10.TRAIN_BATCHES + cifar10.TEST_BATCHES):
            image = np.zeros((per_batch, 3, 32, 32), np.uint8)
            image[:, 0], image[:, 1], image[:, 2] = k, 100 + k, 200
            add(name, {"data": image.reshape(per_batch, -1), "labels": [k % 10] * per_batch})
        add("batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return path


def trusted(module, archive, monkeypatch):
    """Make ``module`` accept the generated ``archive`` as its original file."""
    monkeypatch.setattr(module, "ARCHIVE_MD5", md5(archive))
    return archive


def test_cifar10_archive_reader(tmp_path, monkeypatch):
    trusted(cifar10, make_cifar_archive(tmp_path), monkeypatch)
    data = load_source("cifar10", tmp_path, tmp_path / "cache")
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    assert data.x_train[4, 0, 0, 0] == 1 and data.x_train[4, 1, 5, 5] == 101 and data.x_train[4, 2, 31, 31] == 200
    assert data.y_test.tolist() == [5] * 4 and data.classes[3] == "class3"


def test_cifar10_corrupt_archive(tmp_path, monkeypatch):
    archive = trusted(cifar10, make_cifar_archive(tmp_path), monkeypatch)
    archive.write_bytes(archive.read_bytes()[:-10])
    with pytest.raises(Exception, match="truncated or corrupt"):
        load_source("cifar10", tmp_path, tmp_path / "cache")


def make_tinyimagenet_archive(folder, wnids=("n01", "n02", "n03"), per_class=3):
    """A tiny archive in the original layout; class c's images are flat grey c * 60 + 30."""
    path = folder / tinyimagenet.ARCHIVE
    root = tinyimagenet.ROOT
    jpeg = lambda c, gray=False: encode_jpeg(torch.full((1 if gray else 3, 64, 64), c * 60 + 30, dtype=torch.uint8),
                                             quality=100).numpy().tobytes()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{root}/wnids.txt", "\n".join(wnids) + "\n")
        z.writestr(f"{root}/words.txt", "".join(f"{w}\tthing {w}\n" for w in wnids) + "n99\tunused\n")
        for c, w in enumerate(wnids):
            z.writestr(f"{root}/train/{w}/{w}_boxes.txt", "")
            for i in range(per_class):
                z.writestr(f"{root}/train/{w}/images/{w}_{i}.JPEG", jpeg(c, gray=i == 0))
        lines = []
        for i, w in enumerate(reversed(wnids)):
            z.writestr(f"{root}/val/images/val_{i}.JPEG", jpeg(len(wnids) - 1 - i))
            lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
        z.writestr(f"{root}/val/val_annotations.txt", "\n".join(lines) + "\n")
    return path


def test_tinyimagenet_archive_reader(tmp_path, monkeypatch):
    trusted(tinyimagenet, make_tinyimagenet_archive(tmp_path), monkeypatch)
    data = load_source("tinyimagenet", tmp_path, tmp_path / "cache")
    assert data.x_train.shape == (9, 3, 64, 64) and data.x_test.shape == (3, 3, 64, 64)
    assert data.y_train.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and data.y_test.tolist() == [2, 1, 0]
    means = data.x_train.reshape(9, -1).mean(axis=1)
    assert np.allclose(means, np.repeat([30, 90, 150], 3), atol=2)  # grayscale images expanded to RGB
    assert data.classes == ["thing n01", "thing n02", "thing n03"]


def test_tinyimagenet_wrong_archive(tmp_path, monkeypatch):
    archive = make_tinyimagenet_archive(tmp_path)
    monkeypatch.setattr(tinyimagenet, "ARCHIVE_MD5", "0" * 32)
    with pytest.raises(Exception, match=f"{archive}.*expected 0000"):
        load_source("tinyimagenet", tmp_path, tmp_path / "cache")


def test_interrupted_save_leaves_no_file(tmp_path, monkeypatch):
    from gloro_repro.data import digits

    data = digits.load()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(KeyboardInterrupt):
        data.save(tmp_path, "digits")
    assert list(tmp_path.iterdir()) == []


def test_unknown_dataset_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load_source("svhn")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_source("mnist", tmp_path / "nope")


@pytest.fixture
def digits_module(tmp_path):
    prepare.main(["digits", "--out", str(tmp_path)])
    module = ArraysDataModule(tmp_path, "digits", batch_size=100, val_fraction=0.1, seed=3)
    module.setup()
    return module


def test_datamodule_splits_and_scales(digits_module):
    x_train, _ = digits_module.tensors["train"]
    x_val, _ = digits_module.tensors["val"]
    assert len(x_train) + len(x_val) == 1347 and len(x_val) == 135
    assert digits_module.describe() == ([1, 8, 8], 10)
    x, y, total = digits_module.on_after_batch_transfer(next(iter(digits_module.val_dataloader())), 0)
    assert total == len(x) == 135 and x.dtype == torch.float32 and x.min() >= 0 and x.max() == 1.0


def test_batches_on_the_device_are_not_walked_again(digits_module):
    batch = next(iter(digits_module.train_dataloader()))
    assert digits_module.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch
    moved = digits_module.transfer_batch_to_device(batch, torch.device("meta"), 0)  # elsewhere: moved
    assert moved[0].device.type == moved[1].device.type == "meta" and moved[2:] == batch[2:]


def test_validation_split_is_seeded_and_disjoint():
    train, val = split_validation(1000, 0.1, seed=7)
    assert len(val) == 100 and not set(train) & set(val) and len(set(train) | set(val)) == 1000
    assert np.array_equal(val, split_validation(1000, 0.1, seed=7)[1])
    with pytest.raises(ValueError, match="validation fraction"):
        split_validation(10, 1.0, 0)


def test_batches_cover_each_epoch_and_reshuffle_reproducibly():
    x, y = torch.arange(250)[:, None], torch.arange(250)
    epoch = [0]
    batches = TensorBatches(x, y, 64, shuffle=True, seed=1, epoch=lambda: epoch[0])
    epoch0 = torch.cat([b for _, b, _, _ in batches])
    assert len(batches) == 4 and sorted(epoch0.tolist()) == list(range(250))
    epoch[0] = 1
    epoch1 = torch.cat([b for _, b, _, _ in batches])
    assert not torch.equal(epoch0, epoch1)
    again = TensorBatches(x, y, 64, shuffle=True, seed=1, epoch=lambda: 1)
    assert torch.equal(torch.cat([b for _, b, _, _ in again]), epoch1)  # a resumed run sees the same order


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ranks_share_each_global_batch_exactly(world_size):
    """Under DDP every rank takes a disjoint, contiguous slice of each global batch of the same
    permutation: together they are the single process's batches, in order, even the short last one."""
    x, y = torch.arange(250)[:, None], torch.arange(250)
    single = list(TensorBatches(x, y, 64, shuffle=True, seed=1, epoch=lambda: 2))
    ranks = [list(TensorBatches(x, y, 64, shuffle=True, seed=1, epoch=lambda: 2, rank=r, world_size=world_size))
             for r in range(world_size)]
    assert all(len(shares) == len(single) for shares in ranks)  # no rank waits for a batch that never comes
    for i, (_, labels, offset, total) in enumerate(single):
        assert offset == 0 and total == len(labels)
        shares = [ranks[r][i] for r in range(world_size)]
        assert torch.equal(torch.cat([share[1] for share in shares]), labels)
        assert [share[2] for share in shares] == [sum(len(s[1]) for s in shares[:r]) for r in range(world_size)]
        assert {share[3] for share in shares} == {total}
        assert max(len(s[1]) for s in shares) - min(len(s[1]) for s in shares) <= 1


def test_per_device_batch_refuses_an_uneven_split():
    assert per_device_batch(512, 4) == 128
    with pytest.raises(HardwareError, match="batch_size 100 does not divide among 3 processes"):
        per_device_batch(100, 3)


class Recorder(L.LightningModule):
    """Records what the Trainer feeds it."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(64, 10)
        self.seen, self.first_batches = [], []

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        if batch_idx == 0:
            self.first_batches.append(y.clone())
        self.seen.append((x.min().item(), x.max().item(), x.dtype))
        return torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_trains_from_the_datamodule_with_new_order_each_epoch(tmp_path):
    prepare.main(["digits", "--out", str(tmp_path)])
    module = ArraysDataModule(tmp_path, "digits", batch_size=256, augmentation="default", seed=0)
    model = Recorder()
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(model, datamodule=module)
    assert len(model.first_batches) == 3
    assert not torch.equal(model.first_batches[0], model.first_batches[1])
    assert all(lo >= 0 and hi <= 1 and dtype == torch.float32 for lo, hi, dtype in model.seen)


def test_digits_classes_are_far_enough_apart_for_eps_0_3(report):
    """Lemma 1: two differently-labelled points closer than 2 eps cannot both be certified. The
    digits default (eps 0.3) needs every pair of different classes at least 0.6 apart."""
    data = load_source("digits")
    x = np.concatenate([data.x_train, data.x_test]).reshape(-1, 64) / data.max_value
    y = np.concatenate([data.y_train, data.y_test])
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    nearest_other = np.where(y[:, None] != y[None], d, np.inf).min(axis=1)
    assert nearest_other.min() > 2 * 0.3
    report(f"digits in [0, 1]: smallest distance between classes {nearest_other.min():.2f}, "
           f"median nearest other-class distance {np.median(nearest_other):.2f}")
