"""dvc.yaml against the code and params.yaml: every stage depends on the files it imports and on
exactly the params it reads, so an edit re-runs what it changes and nothing else; a run killed
mid-training loses no epoch to an edit of the evaluation budget."""
from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import PARAMS, ROOT, tiny_params

PACKAGES = ("gloro_repro", "sweeps", "benchmarks")
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    return next((p for p in (path.with_suffix(".py"), path / "__init__.py") if p.exists()), None)


def import_closure(module: str) -> set[str]:
    """The project files that running ``module`` can import, lazy (in-function) imports included,
    with every parent package's ``__init__.py``."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for depth in range(1, len(parts) + 1):
            package = ".".join(parts[:depth])
            path = _module_file(package)
            if path is None or path in seen:
                continue
            seen.add(path)
            here = package if path.name == "__init__.py" else package.rpartition(".")[0]
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    todo += [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        anchor = here.split(".")[:len(here.split(".")) - node.level + 1]
                        base = ".".join(anchor + ([base] if base else []))
                    todo.append(base)
                    todo += [f"{base}.{alias.name}" for alias in node.names if _module_file(f"{base}.{alias.name}")]
            todo = [name for name in todo if name.split(".")[0] in PACKAGES]
    return {str(path.relative_to(ROOT)) for path in seen}


def code_deps(stage: dict) -> list[str]:
    spec = stage.get("do", stage)
    return [d for d in spec["deps"] if d.split("/")[0] in PACKAGES]


def test_import_closure_follows_lazy_and_relative_imports():
    closure = import_closure("gloro_repro.stages.train")
    assert "gloro_repro/training.py" in closure  # imported inside the stage's function
    assert "gloro_repro/lit/datamodule.py" in closure and "gloro_repro/gloro/__init__.py" in closure
    assert "gloro_repro/data/arrays.py" in import_closure("gloro_repro.data.sources")  # from .arrays import ...
    assert "gloro_repro/tables.py" not in closure


@pytest.mark.parametrize("name", sorted(DVC_YAML))
def test_each_stage_depends_on_exactly_the_code_it_runs(name):
    stage = DVC_YAML[name]
    cmd = stage.get("do", stage)["cmd"]
    assert cmd.split()[:3] == ["python", "-m", f"gloro_repro.stages.{name}"]
    closure, deps = import_closure(f"gloro_repro.stages.{name}"), code_deps(stage)
    covered = lambda path, dep: path == dep or path.startswith(dep + "/")
    missing = sorted(path for path in closure if not any(covered(path, dep) for dep in deps))
    unused = sorted(dep for dep in deps if not any(covered(path, dep) for path in closure))
    assert not missing, f"dvc.yaml: stage {name} imports {missing} but does not depend on them"
    assert not unused, f"dvc.yaml: stage {name} depends on {unused} but imports none of it"


def default_stage_names() -> set[str]:
    """The stages ``dvc repro`` runs on the committed params.yaml: each ``foreach`` over its list."""
    params = yaml.safe_load(PARAMS.read_text())
    names = set()
    for name, stage in DVC_YAML.items():
        over = stage.get("foreach")
        names |= {f"{name}@{item}" for item in params[over.strip("${}")]} if over else {name}
    return names


def test_dvc_lock_records_only_the_default_pipeline():
    """DVC parses and rewrites the whole dvc.lock around every stage it runs (round-trip YAML, pure
    Python), and never drops the entries of stages a run no longer has: left there, those of other
    experiments made it 1.6 times as long and cost the first ``dvc repro`` about half a second a stage."""
    lock, default = set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]), default_stage_names()
    assert not lock - default, f"dvc.lock holds stages outside the default pipeline: {sorted(lock - default)}; " \
                               "drop them (docs/pipeline.md)"
    assert not default - lock, f"dvc.lock lacks {sorted(default - lock)}: run dvc repro and commit dvc.lock"


def test_dvc_reads_yaml_with_the_c_parser():
    """ruamel.yaml.clib (requirements.txt) gives DVC's plain YAML reads a C parser: 0.06 s for dvc.lock
    against 0.25 s in pure Python."""
    from ruamel.yaml.main import CParser

    assert CParser is not None, "ruamel.yaml.clib is not installed: pip install -r requirements.txt"


# ---- a miniature project under DVC ----

def _dvc(project: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=project, env=env,
                          capture_output=True, text=True, **kwargs)


def _edit(project: Path, path: str, value) -> dict:
    """Set ``path`` (dotted) in the project's params.yaml; return the params as they were."""
    before = yaml.safe_load((project / "params.yaml").read_text())
    params = json.loads(json.dumps(before))
    *parents, key = path.split(".")
    holder = params
    for part in parents:
        holder = holder[part]
    holder[key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    return before


def _changed_stages(project: Path) -> set[str]:
    result = _dvc(project, "status", "--json")
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout or "{}"))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project (code, dvc.yaml, a tiny params.yaml) after a complete ``dvc repro``."""
    project = tmp_path_factory.mktemp("dvc_project")
    shutil.copytree(ROOT / "gloro_repro", project / "gloro_repro", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, project / name)
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    assert _dvc(project, "init", "--no-scm", "-q").returncode == 0
    result = _dvc(project, "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return project


def test_a_finished_run_is_up_to_date(project):
    assert _changed_stages(project) == set()
    assert (project / "data/digits/digits.npz").exists() and not (project / "data/tiny").exists()


EDITS = [  # (params key, new value, the stages whose own dependencies change)
    ("experiments.tiny.attack.steps", 3, {"certify@tiny", "tables"}),
    ("experiments.tiny.lower_bound.global_steps", 3, {"lower_bounds@tiny", "tables"}),
    ("experiments.tiny.eps_test", 0.25, {"train@tiny", "converge@tiny", "certify@tiny", "lower_bounds@tiny", "tables"}),
    ("experiments.tiny.training.epochs", 4, {"train@tiny", "tables"}),
    ("experiments.tiny.training.converge_tol", 1e-4, {"train@tiny", "converge@tiny", "tables"}),
    ("experiments.tiny.training.batch_size", 128, {"warmup@tiny", "train@tiny", "tables"}),
    ("experiments.tiny.model.init", "default", {"warmup@tiny", "train@tiny", "tables"}),
    ("experiments.tiny.data.val_fraction", 0.2, {"warmup@tiny", "train@tiny", "tables"}),
    ("experiments.tiny.data.dataset", "mnist_t10k", {"dataset@tiny", "warmup@tiny", "train@tiny", "tables"}),
    ("experiments.digits_minmax.training.epochs", 61, {"tables"}),  # an experiment not in `run`
    ("sources.digits", "/elsewhere", {"prepare@digits"}),
    ("wandb.project", "elsewhere", set()),
]


@pytest.mark.parametrize("key, value, expected", EDITS, ids=[e[0].removeprefix("experiments.") for e in EDITS])
def test_an_edit_changes_exactly_the_stages_that_read_it(project, key, value, expected, report):
    before = _edit(project, key, value)
    try:
        changed = _changed_stages(project)
    finally:
        (project / "params.yaml").write_text(yaml.safe_dump(before))
    report(f"dvc status after editing {key}: {', '.join(sorted(changed)) or 'nothing'}")
    assert changed == expected


def test_a_failing_stage_deletes_no_result(project):
    """DVC removes a stage's outputs before running it; the results are ``persist`` outputs, so a
    stage that then refuses its params leaves every committed result as it was."""
    results = {p: p.read_bytes() for p in (project / "results").rglob("*") if p.is_file()}
    before = _edit(project, "experiments.tiny.training.eps_schedule", "lgo")
    try:
        run = _dvc(project, "repro")
    finally:
        (project / "params.yaml").write_text(yaml.safe_dump(before))
    assert run.returncode != 0 and "bad eps schedule 'lgo'" in run.stdout + run.stderr
    assert {p: p.read_bytes() for p in results if p.exists()} == results
    assert _changed_stages(project) == set()


def _epochs_in(checkpoint: Path) -> int:
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"] + 1
    except Exception:
        return 0


def test_a_killed_run_loses_no_epoch_to_an_edit_of_the_attack_budget(project, report):
    _edit(project, "experiments.tiny.training", tiny_params(epochs=30)["experiments"]["tiny"]["training"] | {
        "batch_size": 64})
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "WANDB_MODE": "disabled"}
    repro = subprocess.Popen([str(Path(sys.executable).parent / "dvc"), "repro"], cwd=project, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last, aside = project / "models/tiny/train/last.ckpt", project / "models/tiny/set_aside"
    deadline = time.monotonic() + 180
    # the finished 3-epoch run is set aside first (other settings), then the new run begins
    while not (aside.exists() and _epochs_in(last) >= 3) and repro.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(repro.pid, signal.SIGKILL)  # kill -9 dvc and the training stage under it
    repro.wait()
    kept = _epochs_in(last)
    assert 3 <= kept < 30, f"the kill should land mid-training, got {kept} epochs"

    _edit(project, "experiments.tiny.attack.steps", 4)
    result = _dvc(project, "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "resuming tiny" in result.stdout
    summary = json.loads((project / "results/training/tiny.json").read_text())
    assert summary["resumed"] and summary["epochs"] == 30 and len(summary["epoch_seconds"]) == 30
    assert len(list(aside.iterdir())) == 1, "only the finished 3-epoch run was set aside; the killed one went on"
    saved = sum(summary["epoch_seconds"][:kept])
    report(f"kill -9 mid-training, then an attack-budget edit: {kept} of 30 epochs kept, "
           f"{saved:.2f} s of training not repeated")
    assert _changed_stages(project) == set()


def test_dvc_exp_run_set_changes_only_the_values_in_params_yaml(tmp_path):
    """params.yaml is in the layout DVC writes, so ``dvc exp run -S`` changes only the lines it sets."""
    import difflib

    from dvc.utils.serialize import modify_yaml

    copy = tmp_path / "params.yaml"
    copy.write_text(PARAMS.read_text())
    with modify_yaml(copy) as params:  # what `-S` does
        params["experiments"]["digits_minmax"]["training"]["epochs"] = 100
        params["experiments"]["digits_minmax"]["attack"]["steps"] = 50
        params["run"] = ["digits_minmax", "mnist_t10k_2c2f_minmax"]
        params["datasets"] = ["digits", "mnist_t10k"]
    changed = [line[0] + line[1:].strip() for line in difflib.unified_diff(
        PARAMS.read_text().splitlines(), copy.read_text().splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert sorted(changed) == sorted([
        "-epochs: 60", "+epochs: 100", "-steps: 100", "+steps: 50", "-- digits_relu_ce",
        "-- digits_relu_trades", "-- digits_standard", "+- mnist_t10k_2c2f_minmax", "+- mnist_t10k"]), changed
