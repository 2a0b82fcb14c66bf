"""README's code for the core in a plain PyTorch loop runs as written."""
from __future__ import annotations

import re

import torch
from conftest import ROOT


def test_core_loop_in_readme_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The core in your own training loop"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    g = torch.Generator().manual_seed(0)
    loader = [(torch.rand(32, 1, 28, 28, generator=g), torch.randint(10, (32,), generator=g)) for _ in range(2)]
    scope = {"loader": loader, "x_test": torch.rand(16, 1, 28, 28, generator=g)}
    exec(code, scope)
    cert = scope["cert"]
    assert cert.certified.shape == (16,) and cert.radius.shape == (16,)
