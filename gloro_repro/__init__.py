"""gloro-repro: a PyTorch reproduction of Globally-Robust Neural Networks (Leino et al., 2021)."""
