"""Optuna replay of Appendix B's greedy hyperparameter search (``gloro-search``).

The code lives in the repository's top-level ``sweeps/`` folder and installs as ``gloro_repro.sweeps``.
"""
