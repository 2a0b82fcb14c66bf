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


def test_the_plain_torch_certificate_in_readme_is_the_provable_one(tmp_path):
    """README's plain-torch snippet, run on an exported model, certifies exactly what the certify
    command's provable default does."""
    from gloro_repro.exported import ExportedModel
    from gloro_repro.gloro import GloroNet, build_network

    net = GloroNet(build_network("digits", (1, 8, 8), 10, "minmax", "orthogonal", seed=0), eps=0.0).eval()
    net.converge()
    x = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    # the median input lies just beyond eps once rounding is counted, within it if not
    net.eps = float(ExportedModel.of(net).certify(x).radius.median()) * (1 + 1e-12)
    ExportedModel.of(net).save(tmp_path, {})
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(import json, torch\nf = torch.export.load.*?)```", readme, re.S).group(1)
    scope = {"x": x}
    exec(code.replace("models/digits_minmax/best", str(tmp_path)), scope)
    expected = ExportedModel.load(tmp_path).certify(x).certified
    assert 50 < int(expected.sum()) < 150 and torch.equal(scope["certified"], expected)
    exec(code.replace("models/digits_minmax/best", str(tmp_path)).replace(" - r - r[j][:, None]", ""), scope)
    assert not torch.equal(scope["certified"], expected), "without the rounding term it certifies more"
