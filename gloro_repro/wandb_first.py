"""Imported first, before torch, by the stages that start a W&B run: it builds W&B's launch models.

A process's first ``wandb.init`` imports ``wandb.sdk.launch``, which defines some 60 pydantic models
whose field docstrings pydantic (on Python < 3.13) locates by calling ``inspect.getmodule`` on every
stack frame, each call a walk over ``sys.modules``. With torch and Lightning loaded (4,247 modules),
the first ``wandb.init`` took 2.3 s on 2 cores, 1.7 s of it in that import; imported first, the
import takes 0.55 s and the ``wandb.init`` after torch 0.4 s.
"""
import sys

if sys.version_info < (3, 13):
    import wandb.sdk.launch  # noqa: F401
