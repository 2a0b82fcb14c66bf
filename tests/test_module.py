"""The LightningModule's epoch metrics: the means of what each training step computed."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import PARAMS
from lightning.pytorch.callbacks import Callback

from gloro_repro.config import load_params
from gloro_repro.data.arrays import DatasetArrays
from gloro_repro.hardware import Hardware


class StepLosses(Callback):
    """Each step's loss and batch size, as Lightning hands them to the callbacks."""

    def __init__(self):
        self.steps: list[tuple[float, int]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append((float(outputs["loss"]), len(batch[0])))


@pytest.mark.parametrize("warmup", [0, 1])
def test_epoch_metrics_are_the_batch_weighted_means_of_the_steps(tmp_path, warmup):
    from gloro_repro.lit.module import GloroModule
    from gloro_repro.training import build_trainer, datamodule_for

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    experiment = load_params(PARAMS).experiments["digits_relu_trades"]
    experiment = experiment.with_values(warmup=warmup, epochs=1, batch_size=64, val_fraction=0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 17, size=(150, 1, 8, 8), dtype=np.uint8)  # batches of 64, 64 and 22
    y = rng.integers(0, 10, size=150).astype(np.int64)
    DatasetArrays(x, y, x[:8], y[:8], classes=[str(c) for c in range(10)], max_value=16).save(tmp_path, "digits")
    steps = StepLosses()
    module = GloroModule(experiment.trained_settings(), [1, 8, 8], 10)
    trainer = build_trainer(1 + warmup, False, Hardware("cpu"), experiment.training.batch_size, callbacks=(steps,),
                            limit_val_batches=0, enable_checkpointing=False, progress=False)
    trainer.fit(module, datamodule_for(experiment, tmp_path))
    last_epoch = steps.steps[-3:]
    assert [n for _, n in last_epoch] == [64, 64, 22]
    expected = sum(loss * n for loss, n in last_epoch) / 150
    logged = trainer.callback_metrics
    assert float(logged["train/loss"]) == pytest.approx(expected, rel=1e-6)
    assert 0 <= float(logged["train/clean"]) <= 1 and 0 <= float(logged["train/vra"]) <= float(logged["train/clean"])
    assert module._train_count == 0 and not module._train_sums  # reset for the next epoch
