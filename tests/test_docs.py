"""The front door: README short, its links resolving, its results block fresh; the MkDocs site
(pages and API reference) building in strict mode."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT

from gloro_repro import readme


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    targets = re.findall(r"\]\((?!https?://)([^)#]+)(?:#[^)]*)?\)", text)
    assert targets and [t for t in targets if not (ROOT / t).exists()] == []


def _committed_metrics(folder):
    """results/metrics as committed (a local `dvc repro` rewrites its timings), or as found outside git."""
    listed = subprocess.run(["git", "ls-tree", "--name-only", "HEAD", "results/metrics/"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0 or not listed.stdout.strip():
        return ROOT / "results/metrics"
    for name in listed.stdout.split():
        shown = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=ROOT, capture_output=True, text=True, check=True)
        (folder / name.rsplit("/", 1)[1]).write_text(shown.stdout)
    return folder


def test_readme_results_block_is_regenerated_from_the_committed_results(tmp_path):
    text, metrics = (ROOT / "README.md").read_text(), _committed_metrics(tmp_path)
    assert readme.with_block(text, readme.results_table(metrics)) == text, \
        "README's results block is stale: run python -m gloro_repro.readme"
    rows = [line for line in text.split(readme.START)[1].split(readme.END)[0].splitlines() if line.startswith("|")]
    assert len(rows) == 2 + len(list(metrics.glob("*.json")))


def test_the_docs_site_builds_in_strict_mode(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GloroNet" in (tmp_path / "api/core/index.html").read_text()  # API pages from the docstrings
    pages = {p.stem for p in (ROOT / "docs").glob("*.md")}
    assert {p.parent.name for p in tmp_path.glob("*/index.html")} >= pages - {"index"}
