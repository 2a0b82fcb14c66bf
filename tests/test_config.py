"""params.yaml validation: every mistake fails before any work, naming the key and the value."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import PARAMS, tiny_project

from gloro_repro import paper
from gloro_repro.config import ConfigError, load_params, parse_params
from gloro_repro.stages import train, warmup
from gloro_repro.tables import paper_loss

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load(PARAMS.read_text())


def with_change(experiment: str, key: str, value) -> dict:
    """params.yaml with one key of an experiment changed (``group.key`` or a top-level key)."""
    data = copy.deepcopy(RAW)
    *group, key = key.split(".")
    holder = data["experiments"][experiment]
    holder = holder[group[0]] if group else holder
    if value is DELETE:
        del holder[key]
    else:
        holder[key] = value
    return data


DELETE = object()


def test_params_yaml_is_valid_and_defaults_to_the_digits_experiments():
    params = load_params(PARAMS)
    assert params.run == ("digits_minmax", "digits_relu_ce", "digits_relu_trades", "digits_standard")
    assert params.wandb.mode == "offline"


def test_paper_rows_in_params_match_tables_b1_b2():
    """params.yaml's paper experiments carry the paper's hyperparameters, column by column."""
    params = load_params(PARAMS)
    for name, theirs in paper.HYPERPARAMETERS.items():
        ours = params.experiment(name)
        for key, value in theirs.items():
            mine = paper_loss(ours) if key == "loss" else ours.value(key)
            if isinstance(value, float):
                assert float(mine) == pytest.approx(value), (name, key)
            else:
                assert str(mine) == str(value), (name, key)


def test_every_architecture_has_a_standard_baseline():
    params = load_params(PARAMS)
    gloro = {(e.data.dataset, e.model.architecture) for name, e in params.experiments.items()
             if name in paper.HYPERPARAMETERS}
    standard = {(e.data.dataset, e.model.architecture) for e in params.experiments.values()
                if not e.robust and e.data.dataset != "digits"}
    assert gloro == standard


@pytest.mark.parametrize("key, value, message", [
    ("training.epohcs", 5, "experiments.digits_minmax.training: unknown key(s) ['epohcs']"),
    ("epochs", 5, "experiments.digits_minmax: unknown key(s) ['epochs']"),
    ("training.eps_schedule", "linear", "bad eps schedule 'linear'"),
    ("training.lam", "1,2", "bad TRADES lambda schedule '1,2'"),
    ("training.lam", DELETE, "digits_minmax.training.lam: missing; loss 'trades' needs its lambda schedule"),
    ("training.loss", "0.1,2.0,60", "training.loss: got '0.1,2.0,60', expected one of ['ce', 'emma', 'trades'] "
                                    "(loss now names the loss, and TRADES's lambda schedule is training.lam: write "
                                    "loss: trades, lam: '0.1,2.0,60')"),
    ("training.loss", "CE", "write loss: ce"),
    ("training.loss", "hinge", "training.loss: got 'hinge', expected one of ['ce', 'emma', 'trades']"),
    ("training.lr_decay", "decay to fast", "bad LR schedule 'decay to fast'"),
    ("model.architecture", "9C9F", "experiments.digits_minmax.model.architecture: '9C9F' is neither"),
    ("model.activation", "tanh", "experiments.digits_minmax.model.activation: got 'tanh'"),
    ("training.batch_size", 0, "experiments.digits_minmax.training.batch_size: got 0"),
    ("training.batch_size", "big", "experiments.digits_minmax.training.batch_size: got 'big', expected int"),
    ("eps_test", -0.3, "experiments.digits_minmax.eps_test: got -0.3"),
    ("data.val_fraction", 1.0, "data.val_fraction: got 1.0, expected a fraction in [0, 1)"),
    ("data.dataset", "imagenet", "experiments.digits_minmax.data.dataset: got 'imagenet'"),
    ("attack", {"steps": 10}, None),
    ("attack", {"step": 10}, "experiments.digits_minmax.attack: unknown key(s) ['step']"),
    ("model.power_iterations", DELETE, "experiments.digits_minmax.model: missing key(s) ['power_iterations']"),
    ("training", DELETE, "experiments.digits_minmax: missing key(s) ['training']"),
])
def test_bad_values_name_the_key_and_value(key, value, message):
    data = with_change("digits_minmax", key, value)
    if message is None:
        parse_params(data)
        return
    with pytest.raises(ConfigError) as error:
        parse_params(data)
    assert message in str(error.value)


def test_standard_models_must_use_plain_ce():
    with pytest.raises(ConfigError, match="digits_standard.training.loss: got 'trades'; a standard model trains "
                                          "with plain 'ce'"):
        parse_params(with_change("digits_standard", "training.loss", "trades"))
    with pytest.raises(ConfigError, match="digits_relu_ce.training.lam: got '1.5', but loss 'ce' takes no lambda"):
        parse_params(with_change("digits_relu_ce", "training.lam", 1.5))


def test_datasets_must_be_exactly_those_of_the_selected_experiments():
    for datasets in (["digits", "mnist"], [], ["digits", "digits"]):
        with pytest.raises(ConfigError, match=r"datasets: got .*, but the experiments in run use \['digits'\]"):
            parse_params(copy.deepcopy(RAW) | {"datasets": datasets})
    selection = {"run": ["digits_minmax", "mnist_t10k_2c2f_minmax"], "datasets": ["digits"]}
    with pytest.raises(ConfigError, match=r"dvc exp run -S 'datasets=\[digits,mnist_t10k\]'"):
        parse_params(copy.deepcopy(RAW) | selection)
    assert parse_params(copy.deepcopy(RAW) | selection | {"datasets": ["mnist_t10k", "digits"]})


def test_trained_settings_leave_out_only_the_evaluation_budgets():
    experiment = load_params(PARAMS).experiment("digits_minmax")
    assert set(experiment.trained_settings()) == {"name", "data", "model", "training", "eps_test"}
    changed = parse_params(with_change("digits_minmax", "attack", {"steps": 7})).experiment("digits_minmax")
    assert changed.trained_settings() == experiment.trained_settings()
    for key in ("training.epochs", "data.val_fraction", "model.init", "eps_test"):
        value = {"training.epochs": 61, "data.val_fraction": 0.2, "model.init": "default", "eps_test": 0.25}[key]
        other = parse_params(with_change("digits_minmax", key, value)).experiment("digits_minmax")
        assert other.trained_settings() != experiment.trained_settings(), key


def test_run_must_name_known_experiments():
    data = copy.deepcopy(RAW) | {"run": ["digits_minmax", "digits_maxmin"]}
    with pytest.raises(ConfigError, match="run: unknown experiment 'digits_maxmin'"):
        parse_params(data)
    with pytest.raises(ConfigError, match=r"unknown top-level key\(s\) \['rn'\]"):
        parse_params(copy.deepcopy(RAW) | {"rn": []})


def test_stage_exits_2_with_the_message_before_any_work(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_change("digits_minmax", "training.eps_schedule", "lgo")))
    assert train.main(["digits_minmax", "--params", str(tmp_path / "params.yaml")]) == 2
    assert "bad eps schedule 'lgo'" in capsys.readouterr().err
    assert train.main(["no_such_experiment", "--params", str(PARAMS)]) == 2
    assert "unknown experiment 'no_such_experiment'" in capsys.readouterr().err


def test_a_head_that_does_not_fit_the_data_is_a_params_error(tmp_path, capsys, monkeypatch):
    """A custom spec is checked against the prepared data's class count when the network is built."""
    folder = tiny_project(tmp_path / "project")
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["experiments"]["tiny"]["model"]["architecture"] = "c8k3s1-d7"
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(folder)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert warmup.main(["tiny"]) == 2
    assert "experiments.tiny.model.architecture: architecture 'c8k3s1-d7' ends in d7, but the data has 10 classes" \
        in capsys.readouterr().err


@pytest.mark.parametrize("module,allowed", [("gloro_repro.config", {"yaml"}), ("gloro_repro.gloro", set())])
def test_config_and_core_imports_are_light(module, allowed):
    """Reading params.yaml needs torch (the core's names) and yaml only; the core needs torch alone."""
    heavy = sorted({"torchvision", "sklearn", "lightning", "wandb", "optuna", "pandas", "matplotlib", "yaml", "dvc"}
                   - allowed)
    code = (f"import sys, {module}; found = [m for m in {heavy} if m in sys.modules]; print(found); "
            "sys.exit(bool(found))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_ramp_longer_than_the_run_is_pointed_out_with_the_fix():
    """Editing ``epochs`` alone keeps the ramps' lengths: the train stage says where they end instead."""
    experiment = load_params(PARAMS).experiment("digits_minmax")
    assert experiment.ramp_notes() == []
    short = experiment.with_values(epochs=3)
    assert short.ramp_notes() == [
        "experiments.digits_minmax.training.lam ramps over 60 epochs but the run has 3: it ends at 0.163 instead "
        "of 2; to ramp over the run, set lam: 0.1,2.0,3"]
    assert short.with_values(lam="0.1,2.0,3").ramp_notes() == []
