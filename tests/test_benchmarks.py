"""The benchmark harness: interleaved timing, the timed workloads and the report."""
import json

import pytest
import torch

from benchmarks import run
from benchmarks.report import render
from benchmarks.sections import cert_row, memory_row, train_row
from benchmarks.timing import interleaved, median_ratio
from benchmarks.workloads import Workload

CPU = torch.device("cpu")


def test_interleaved_alternates_the_order_and_counts_every_call():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, device=CPU,
                        min_sample_s=0)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then alternating
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    with pytest.raises(ValueError, match="repeats"):
        interleaved({"a": lambda: None}, repeats=0, device=CPU)


def test_short_workloads_are_timed_over_several_calls():
    calls = []
    interleaved({"a": lambda: calls.append("a")}, repeats=2, device=CPU, min_sample_s=0.01)
    assert len(calls) > 3


def test_median_ratio_pairs_repeats():
    assert median_ratio({"x": [2.0, 9.0, 3.0], "y": [1.0, 3.0, 1.0]}, "x", "y") == 3.0


def test_workload_rows_measure_the_real_thing():
    w = Workload.build("2C2F", 8, CPU)
    train, cert, memory = train_row(w, 1), cert_row(w, 1), memory_row(w)
    assert train["gloro_step_ms"] > 0 and train["train_ratio"] > 0 and 0 < train["power_iteration_share"]
    assert cert["cert_throughput_ratio"] > 0 and cert["sound_cert_throughput_ratio"] > 0
    assert memory["train_mb_gloro"] >= memory["train_mb_standard"] > 0
    # the timed certification is the network's own: same flags as GloroNet.certify
    assert torch.equal(w.certifier()().certified, w.net.certify(w.x).certified)


def test_training_steps_are_timed_in_ieee_float32_as_the_train_stage_runs_them():
    from gloro_repro.gloro.precision import reduced_precision_flags

    w, seen = Workload.build("2C2F", 4, CPU), []
    step = w.plain_step
    w.plain_step = lambda: (seen.append(reduced_precision_flags()), step())
    assert reduced_precision_flags()  # torch's default: TF32 cuDNN convolutions
    train_row(w, 1)
    assert seen and all(flags == [] for flags in seen)


def test_report_puts_each_ratio_beside_its_goal_and_says_when_there_is_no_gpu():
    row = {"architecture": "2C2F", "input": "1x28x28", "repeats": 3, "plain_step_ms": 10.0, "gloro_step_ms": 11.0,
           "train_ratio": 1.1, "train_met": True, "cert_throughput_ratio": 0.95, "train_mb_gloro": 0.05}
    results = {"device": "CPU", "gpu": False, "torch": "x", "date": "d", "repeats": 3, "command": "c",
               "sections": {"architectures": [row]}}
    text = render(results, before={**results, "sections": {"architectures": [{**row, "train_ratio": 1.3}]}})
    assert "No GPU" in text and "goal <= 1.10" in text and "goal >= 0.9" in text
    assert "2C2F" in text and "1.300" in text and "Before and after" in text


def test_command_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "bench"
    assert run.main(["--sections", "profile", "--repeats", "1", "--out", str(out), "--before", "none"]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    assert results["sections"]["profile"] and results["gpu"] == torch.cuda.is_available()
    assert "Profile of the GloRo training step" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit):
        run.main(["--repeats", "0"])
    assert "--repeats must be >= 1" in capsys.readouterr().err


def test_parity_keras_trades_is_the_projects_trades_until_keras_clips():
    from benchmarks.parity import keras_trades
    from gloro_repro.gloro.losses import trades_loss

    logits = torch.randn(8, 10, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(8)
    gloro = torch.cat([logits, logits.max(1, keepdim=True).values + 0.5], 1)
    ours, keras = trades_loss(gloro, labels, 2.0), keras_trades(logits, gloro, labels, 2.0)
    grad_ours, = torch.autograd.grad(ours, logits, retain_graph=True)
    grad_keras, = torch.autograd.grad(keras, logits)
    assert abs(ours.item() - keras.item()) < 1e-5 and torch.allclose(grad_ours, grad_keras, atol=1e-5)
    # a bottom logit 20 nats above f: every class's probability under 1e-7, clipped, so Keras's term loses
    # the gradient that pushes the bottom logit down
    saturated = torch.cat([logits, logits.max(1, keepdim=True).values + 20], 1)
    assert trades_loss(saturated, labels, 1.0).item() - keras_trades(logits, saturated, labels, 1.0).item() > 1


def test_parity_library_schedules_lag_one_epoch_and_stop_short_of_the_end():
    from benchmarks.parity import library_lists, library_value
    from gloro_repro.config import load_params

    experiment = load_params("params.yaml").experiments["mnist_t10k_2c2f_minmax"]
    lam, lr = library_lists(experiment)
    epochs = experiment.training.epochs
    assert len(lam) == len(lr) == epochs and lam[0] == pytest.approx(0.1) and lam[-1] < 2.0
    assert lr[epochs // 2 - 1] == lr[epochs // 2] == 1e-3 and 1e-6 < lr[-1] < 2e-6
    assert library_value(lam, 0, 7, 16) == lam[0]
    assert library_value(lam, 5, 0, 16) == lam[4]
    assert library_value(lam, 5, 8, 16) == pytest.approx((lam[4] + lam[5]) / 2)


@pytest.mark.parametrize("tf32", [False, True])
def test_full_epochs_train_as_the_stage_does_and_resume_the_long_run(tmp_path, monkeypatch, tf32):
    from benchmarks import full_epochs
    from gloro_repro.gloro.precision import reduced_precision_flags

    seen = []  # the float32 modes in force while training, as the train stage sets them
    start = full_epochs.GloroModule.on_train_start
    monkeypatch.setattr(full_epochs.GloroModule, "on_train_start",
                        lambda self: (seen.append(reduced_precision_flags("cpu")), start(self)))
    out = tmp_path / "epochs"
    args = ["--rows", "mnist_2c2f_minmax", "--epochs", "3", "--images", "96", "--long", "4", "--out", str(out)]
    assert full_epochs.main(args + (["--tf32"] if tf32 else [])) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    row, long = results["rows"][0], results["long"]
    assert row["float32"] == ("tf32" if tf32 else "ieee") and row["images"] == 96 and row["epochs_run"] == 3
    assert row["min_s"] <= row["s_per_epoch"] <= row["max_s"]  # the median of epochs 2 and 3
    assert all(bool(flags) == tf32 for flags in seen) and len(seen) == 3  # the row, the long run's two halves
    assert long["stopped_after"] == 2 and long["checkpoint_epoch_at_stop"] == 2 and long["resumed_to"] == 4
    assert len(long["epoch_seconds"]) == len(long["memory_mb"]) == 4
    assert long["memory"] == "process peak RSS" and 0 < long["memory_mb_first"] <= long["memory_mb_last"]
    assert "| mnist_2c2f_minmax" in out.with_suffix(".md").read_text()
