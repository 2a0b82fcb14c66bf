"""Lightning's rich progress bar, counting epochs from 1 as the stages' own lines do ("Epoch 3/3")."""
from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class EpochProgressBar(RichProgressBar):
    """``Epoch k/n`` with k from 1 to n (Lightning's own bar shows ``Epoch k-1/n-1``)."""

    def _get_train_description(self, current_epoch: int) -> str:
        total = self.trainer.max_epochs
        text = f"Epoch {current_epoch + 1}" + (f"/{total}" if total is not None and total >= 0 else "")
        return f"{text:{len(self.validation_description)}}"  # padded like Lightning's, so the bar does not jump
