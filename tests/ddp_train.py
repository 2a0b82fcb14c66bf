"""Driver for tests/test_ddp.py: warm-up and training of experiment ``tiny`` in the current folder,
as the pipeline runs them, each rank then saving its power-iteration iterates and validation
metrics. Run as a script, so that Lightning's DDP launcher can start the other ranks from it."""
import json
import sys

import torch
from lightning.pytorch.callbacks import Callback

from gloro_repro.config import load_params
from gloro_repro.training import train, warm_up


class RecordRank(Callback):
    """Per rank: the validation metrics of every epoch, and the iterates at the end."""

    def __init__(self):
        self.metrics = []

    def on_validation_epoch_end(self, trainer, module):
        self.metrics.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})

    def on_train_end(self, trainer, module):
        rank = trainer.global_rank
        torch.save({name: buffer.clone() for name, buffer in module.net.named_buffers()}, f"iterates.rank{rank}.pt")
        with open(f"metrics.rank{rank}.json", "w") as handle:
            json.dump(self.metrics, handle)


if __name__ == "__main__":
    params = load_params("params.yaml")
    experiment = params.experiment("tiny")
    start = warm_up(params, experiment, "data/digits", "models/tiny/warmup.ckpt")
    summary = train(params, experiment, "data/digits", start, "models/tiny/train", callbacks=(RecordRank(),))
    if summary is not None:
        with open("summary.json", "w") as handle:
            json.dump(summary, handle)
    sys.exit(0)
