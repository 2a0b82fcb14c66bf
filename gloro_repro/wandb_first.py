"""Imported first, before torch, by the stages that start a W&B run: it builds W&B's launch models.

A process's first ``wandb.init`` imports ``wandb.sdk.launch``, which defines some 60 pydantic models
whose field docstrings pydantic (on Python < 3.13) locates by calling ``inspect.getmodule`` on every
stack frame, each call a walk over ``sys.modules``. With torch and Lightning loaded (4,000 modules)
that took 2.3 s of a 2.6 s ``wandb.init`` on 2 cores; imported first, it takes 0.5 s in all.
"""
import sys

if sys.version_info < (3, 13):
    import wandb.sdk.launch  # noqa: F401
