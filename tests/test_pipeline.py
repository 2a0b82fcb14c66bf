"""A miniature run of every pipeline stage in a temporary directory, resume after kill -9, and
the exported files reproducing every certificate with plain torch."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from conftest import checkpoint_epoch, tiny_params, train_and_kill

from gloro_repro import certify as user_certify
from gloro_repro.artifacts import load_gloro
from gloro_repro.gloro.model import certify_logits
from gloro_repro.stages import certify, converge, dataset, lower_bounds, prepare, tables, train, warmup

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ("clean", "pgd", "vra", "eps", "sec_per_epoch", "epochs", "mem_mb_per_instance", "cert_seconds",
            "cert_mem_mb_per_instance", "lipschitz_global_ub", "lipschitz_global_lb", "lipschitz_local_lb",
            "vra_sound", "device")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A temporary project directory with a tiny params.yaml; W&B offline inside it."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("GLORO_THREADS", "1")
    return tmp_path


def test_every_stage_writes_its_outputs(workdir):
    assert prepare.main(["digits"]) == 0
    assert (workdir / "data/digits/digits.npz").exists()
    assert dataset.main(["tiny"]) == 0
    assert warmup.main(["tiny"]) == 0
    assert train.main(["tiny"]) == 0
    summary = json.loads((workdir / "results/training/tiny.json").read_text())
    assert summary["epochs"] == 3 and not summary["resumed"] and len(summary["epoch_seconds"]) == 3
    assert summary["validation_split"]["size"] == round(0.1 * 1347) and summary["validation_split"]["seed"] == 0
    assert {"best.ckpt", "last.ckpt"} <= {p.name for p in (workdir / "models/tiny/train").iterdir()}
    assert converge.main(["tiny"]) == 0
    for which in ("best", "last"):
        files = {p.name for p in (workdir / f"models/tiny/{which}").iterdir()}
        assert {"gloro.pt", "model.pt2", "lipschitz.json"} <= files
    assert certify.main(["tiny"]) == 0
    cert = json.loads((workdir / "results/certification/tiny.json").read_text())
    assert cert["theorem4_certified_broken"] == cert["lemma1_violations"] == cert["theorem2_violations"] == 0
    assert cert["export_mismatches"] == 0 and cert["last"]["epoch"] == 3
    assert (workdir / "results/plots/radius/tiny.csv").read_text().startswith("radius,certified_accuracy")
    assert lower_bounds.main(["tiny"]) == 0
    bounds = json.loads((workdir / "results/lower_bounds/tiny.json").read_text())
    assert 0 < bounds["lipschitz_global_lb"] <= bounds["lipschitz_global_ub"] * (1 + 1e-6)
    assert tables.main([]) == 0
    metrics = json.loads((workdir / "results/metrics/tiny.json").read_text())
    assert set(CONTRACT) <= set(metrics)
    lipschitz = json.loads((workdir / "models/tiny/best/lipschitz.json").read_text())
    assert {record["torch_threads"] for record in (summary, cert, bounds, lipschitz)} == {1}  # GLORO_THREADS
    assert all(0 <= metrics[k] <= 1 for k in ("clean", "pgd", "vra", "vra_sound"))
    for name in ("D1a", "D1b", "D1c", "B1", "B2", "C1"):
        assert (workdir / f"results/table_{name}.csv").exists()
        assert (workdir / f"results/table_{name}.md").read_text().startswith("# ")
    d1a = (workdir / "results/table_D1a.md").read_text()
    assert "| tiny " in d1a and "not run / 99.0" in d1a  # paper rows we did not run say so
    assert list((workdir / "wandb").glob("offline-run-*")), "W&B runs are written offline, no account needed"

    # An outsider with only model.pt2 and lipschitz.json (plain torch) gets identical certificates.
    data = __import__("numpy").load(workdir / "data/digits/digits.npz")
    x = torch.from_numpy(data["x_test"]).float() / 16
    f = torch.export.load(workdir / "models/tiny/best/model.pt2").module()
    lipschitz = json.loads((workdir / "models/tiny/best/lipschitz.json").read_text())
    with torch.no_grad():
        theirs = certify_logits(f(x), torch.tensor(lipschitz["K"]), lipschitz["eps"])
        ours = load_gloro(workdir / "models/tiny/best")[1].certify(x, bound="power")
    assert torch.equal(theirs.certified, ours.certified) and int(theirs.certified.sum()) == cert["certified"]
    assert torch.equal(theirs.prediction, ours.prediction)

    # Users' own inputs: python -m gloro_repro.certify
    numpy = __import__("numpy")
    numpy.savez(workdir / "X.npz", x=x.numpy(), y=data["y_test"])
    assert user_certify.main(["--model", "models/tiny", "--input", "X.npz", "--out", "out.csv"]) == 0
    rows = (workdir / "out.csv").read_text().splitlines()
    assert rows[0] == "index,prediction,class,certified,radius,label" and len(rows) == len(x) + 1
    assert all(r.split(",")[1] == r.split(",")[2] for r in rows[1:]), "digits' class names are their digits"
    assert sum(r.split(",")[3] == "True" for r in rows[1:]) == cert["certified_sound"]
    # uint8 digits on their own 0..16 scale: the scale comes from the export's record
    numpy.savez(workdir / "X8.npz", x=data["x_test"])
    assert user_certify.main(["--model", "models/tiny", "--input", "X8.npz", "--out", "out8.csv"]) == 0
    assert (workdir / "out8.csv").read_text().splitlines() == [r.rsplit(",", 1)[0] for r in rows]  # no label
    numpy.savez(workdir / "bad.npz", x=x.numpy()[:, :, :4])
    assert user_certify.main(["--model", "models/tiny", "--input", "bad.npz", "--out", "bad.csv"]) == 2


def test_without_a_validation_split_the_last_epoch_is_the_model(workdir):
    """``data.val_fraction: 0``: every training image trains, and ``best`` is the last epoch."""
    params = tiny_params()
    params["experiments"]["tiny"]["data"] = {"dataset": "digits", "val_fraction": 0.0}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    assert prepare.main(["digits"]) == 0 and dataset.main(["tiny"]) == 0 and warmup.main(["tiny"]) == 0
    assert train.main(["tiny"]) == 0
    summary = json.loads((workdir / "results/training/tiny.json").read_text())
    assert summary["train_size"] == 1347 and summary["validation_split"]["size"] == 0
    assert summary["best_epoch"] == 3 and summary["best_val"] is None and summary["selection"].startswith("last epoch")
    assert checkpoint_epoch(workdir / "models/tiny/train/best.ckpt") == 2
    assert converge.main(["tiny"]) == 0 and certify.main(["tiny"]) == 0
    cert = json.loads((workdir / "results/certification/tiny.json").read_text())
    assert cert["selection"] == "last epoch (no validation split)" and cert["epoch"] == cert["last"]["epoch"] == 3
    _, net, _ = load_gloro(workdir / "models/tiny/best")
    converged = [layer.lipschitz().item() for layer in net.layers]
    net.converge(1e-6)
    assert converged == pytest.approx([layer.lipschitz().item() for layer in net.layers], rel=1e-4)


def test_killed_training_resumes_from_last_checkpoint(workdir):
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params(epochs=40)))
    assert prepare.main(["digits"]) == 0 and dataset.main(["tiny"]) == 0 and warmup.main(["tiny"]) == 0
    last = workdir / "models/tiny/train/last.ckpt"
    killed_at = train_and_kill(workdir, dict(os.environ))  # kill -9 mid-training
    assert 1 <= killed_at < 39, f"the kill should land mid-training, got epoch {killed_at}"
    run_id = torch.load(last, weights_only=False)["wandb_run_id"]
    assert train.main(["tiny"]) == 0
    summary = json.loads((workdir / "results/training/tiny.json").read_text())
    assert summary["resumed"] and summary["epochs"] == 40
    assert len(summary["epoch_seconds"]) == 40, "epochs before the kill are kept, not retrained"
    assert checkpoint_epoch(last) == 39
    # one W&B run: the resumed process logged to the run the killed one started
    assert torch.load(last, weights_only=False)["wandb_run_id"] == run_id
    runs = [p.name for p in (workdir / "wandb").glob("offline-run-*")]  # warm-up (0 epochs) logs none
    assert len(runs) == 2 and all(name.endswith(f"-{run_id}") for name in runs), runs

    # A device count the batch cannot be shared among is refused before the finished run is touched.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GLORO_DEVICES", "3")
        assert train.main(["tiny"]) == 2
    assert not (workdir / "models/tiny/set_aside").exists() and checkpoint_epoch(last) == 39

    # Finished: the same command now starts over (e.g. after a code change DVC re-runs it), never skips,
    # and the finished run is kept aside, not deleted.
    assert train.main(["tiny"]) == 0
    assert not json.loads((workdir / "results/training/tiny.json").read_text())["resumed"]
    (aside,) = (workdir / "models/tiny/set_aside").iterdir()
    assert aside.name.endswith("-epoch40") and checkpoint_epoch(aside / "last.ckpt") == 39
    assert "finished all 40 epochs" in json.loads((aside / "why.json").read_text())["reason"][0]
