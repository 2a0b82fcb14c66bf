"""Optuna replay of Appendix B's greedy hyperparameter search (``python -m sweeps.greedy``)."""
