"""params.yaml validation: every mistake fails before any work, naming the key and the value."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline import paper
from pipeline.config import ConfigError, load_params, parse_params
from pipeline.stages import train

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_change(experiment: str, key: str, value) -> dict:
    data = copy.deepcopy(RAW)
    if value is DELETE:
        del data["experiments"][experiment][key]
    else:
        data["experiments"][experiment][key] = value
    return data


DELETE = object()


def test_params_yaml_is_valid_and_defaults_to_the_digits_experiments():
    params = load_params(ROOT / "params.yaml")
    assert params.run == ("digits_minmax", "digits_relu_ce", "digits_relu_trades", "digits_standard")
    assert params.wandb.mode == "offline"


def test_paper_rows_in_params_match_tables_b1_b2():
    """params.yaml's paper experiments carry the paper's hyperparameters, column by column."""
    params = load_params(ROOT / "params.yaml")
    for name, theirs in paper.HYPERPARAMETERS.items():
        ours = params.experiment(name)
        for key, value in theirs.items():
            mine = getattr(ours, key)
            if isinstance(value, float):
                assert float(mine) == pytest.approx(value), (name, key)
            else:
                assert str(mine) == str(value), (name, key)


def test_every_architecture_has_a_standard_baseline():
    params = load_params(ROOT / "params.yaml")
    gloro = {(e.dataset, e.architecture) for name, e in params.experiments.items() if name in paper.HYPERPARAMETERS}
    standard = {(e.dataset, e.architecture) for e in params.experiments.values()
                if not e.robust and e.dataset != "digits"}
    assert gloro == standard


@pytest.mark.parametrize("key, value, message", [
    ("epohcs", 5, "unknown key(s) ['epohcs']"),
    ("eps_schedule", "linear", "bad eps schedule 'linear'"),
    ("loss", "1,2", "bad TRADES lambda schedule '1,2'"),
    ("lr_decay", "decay to fast", "bad LR schedule 'decay to fast'"),
    ("architecture", "9C9F", "experiments.digits_minmax.architecture: '9C9F' is neither"),
    ("activation", "tanh", "experiments.digits_minmax.activation: got 'tanh'"),
    ("batch_size", 0, "experiments.digits_minmax.batch_size: got 0"),
    ("batch_size", "big", "experiments.digits_minmax.batch_size: got 'big', expected int"),
    ("eps_test", -0.3, "experiments.digits_minmax.eps_test: got -0.3"),
    ("val_fraction", 0.0, "val_fraction: got 0.0"),
    ("dataset", "imagenet", "experiments.digits_minmax.dataset: got 'imagenet'"),
    ("attack", {"steps": 10}, None),
    ("attack", {"step": 10}, "experiments.digits_minmax.attack: unknown key(s) ['step']"),
    ("power_iterations", DELETE, "experiments.digits_minmax: missing key(s) ['power_iterations']"),
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
    with pytest.raises(ConfigError, match="digits_standard.loss: got '1.5'"):
        parse_params(with_change("digits_standard", "loss", 1.5))


def test_run_must_name_known_experiments():
    data = copy.deepcopy(RAW) | {"run": ["digits_minmax", "digits_maxmin"]}
    with pytest.raises(ConfigError, match="run: unknown experiment 'digits_maxmin'"):
        parse_params(data)
    with pytest.raises(ConfigError, match=r"unknown top-level key\(s\) \['rn'\]"):
        parse_params(copy.deepcopy(RAW) | {"rn": []})


def test_stage_exits_2_with_the_message_before_any_work(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_change("digits_minmax", "eps_schedule", "lgo")))
    assert train.main(["digits_minmax", "--params", str(tmp_path / "params.yaml")]) == 2
    assert "bad eps schedule 'lgo'" in capsys.readouterr().err
    assert train.main(["no_such_experiment", "--params", str(ROOT / "params.yaml")]) == 2
    assert "unknown experiment 'no_such_experiment'" in capsys.readouterr().err
