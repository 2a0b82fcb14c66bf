"""What a stage prints: its own lines, not the notices of the libraries it drives.

Lightning's start-up notices (accelerators found, a cloud-logging tip, checkpoint restores), its
warnings about things this project does on purpose, and W&B's banner and run summary are silenced at
their source; errors and real warnings still show. Each W&B run is named in one line instead.
"""
from __future__ import annotations

import logging
import os
import warnings

NOTICES = (  # warnings raised by the libraries themselves, not by anything a user can change here
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning 2.6 on torch's pytree API
    r"Checkpoint directory .* exists and is not empty",  # a resumed run's own folder (training.py decides)
)


def quiet_libraries() -> None:
    """Silence Lightning's info notices and the library warnings above; W&B prints nothing itself."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in NOTICES:
        warnings.filterwarnings("ignore", message=message)
    os.environ.setdefault("WANDB_SILENT", "true")


def announce_run(run) -> None:
    """One line naming where a W&B run's data went (its banner and summary are silenced)."""
    if run is None or getattr(run, "disabled", False) or not getattr(run, "dir", None):
        return
    mode = "offline" if getattr(run.settings, "_offline", False) else "online"
    print(f"W&B {mode} run {run.name} ({run.id}): {os.path.dirname(run.dir)}", flush=True)
