"""The greedy search's storage under load: one controlled search run by 1, 2 and 4 worker processes
sharing one storage (PostgreSQL in the README's command), with trials per second, the count of
candidates trained more than once (duplicated) and of candidates no trial completed (lost); goal 0
and 0, and every worker reporting the known winners.

    . .ci/postgres.sh && pg_start
    .venv/bin/python -m benchmarks.search_load --storage "$GLORO_TEST_POSTGRES"
    pg_stop

The controlled objective sleeps a fixed time per trial and has a known best (eps schedule 'log',
lambda 3.2, 300 epochs, LR 5e-07, no warm-up, orthogonal, 5 power iterations, batch 256), so the
winners are known whatever the number of workers. Writes ``results/search_load.{md,json}``.
``--worker`` runs one worker (the tests start these too).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ["log", "3.2", "3", "5e-07", "0", "orthogonal", "5", "256"]  # with Budget(0.01): 300 epochs -> 3


def controlled(sleep: float):
    """VRA peaks at the known best; each trial takes ``sleep`` seconds."""
    def objective(e, trial, label):
        time.sleep(sleep)
        lam = float(e.value("lam")) if "," not in e.value("lam") else 0.0
        return (0.5 + 0.1 * (e.value("eps_schedule") == "log") - 0.2 * abs(lam - 3.2)
                - 0.05 * abs(e.value("epochs") - 3) + 0.05 * (e.value("lr_decay") == "5e-07")
                + 0.05 * (e.value("warmup") == 0)
                + 0.05 * (e.value("init") == "orthogonal") + 0.05 * (e.value("power_iterations") == 5)
                + 0.05 * (e.value("batch_size") == 256))
    return objective


def worker(url: str, name: str, sleep: float, heartbeat: int, grace: int, outage: float) -> dict:
    from gloro_repro.config import load_params
    from gloro_repro.sweeps.claims import open_storage
    from gloro_repro.sweeps.greedy import GreedySearch
    from gloro_repro.sweeps.steps import Budget

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    experiment = load_params(ROOT / "params.yaml").experiment("digits_minmax")
    search = GreedySearch(experiment, controlled(sleep), open_storage(url, heartbeat, grace, outage), Budget(0.01),
                          tie=0.001, name=name, poll_seconds=0.05)
    return {"chosen": [r.chosen for r in search.run()], "trials_run": search.trials_run}


def worker_command(url: str, name: str, sleep: float, heartbeat: int = 1, grace: int = 3,
                   outage: float = 60) -> list[str]:
    return [sys.executable, "-m", "benchmarks.search_load", "--worker", "--storage", url, "--name", name,
            "--sleep", str(sleep), "--heartbeat", str(heartbeat), "--grace", str(grace), "--outage", str(outage)]


def search_trials(url: str, name: str) -> list[tuple[str, optuna.trial.FrozenTrial]]:
    """Every trial of the search ``name``, with the name of its step's study."""
    from gloro_repro.sweeps.claims import open_storage

    storage = open_storage(url, 1, 3)
    return [(study_name, trial) for study_name in optuna.get_all_study_names(storage)
            if study_name.startswith(f"{name}/")
            for trial in optuna.load_study(study_name=study_name, storage=storage).get_trials()]


def tally(url: str, name: str) -> dict:
    """Per candidate of every step study: how many trials completed (1 each is the goal)."""
    complete, states, seen = Counter(), Counter(), set()
    for study_name, trial in search_trials(url, name):
        states[trial.state.name] += 1
        seen.add((study_name, trial.user_attrs["candidate"]))
        if trial.state == optuna.trial.TrialState.COMPLETE:
            complete[(study_name, trial.user_attrs["candidate"])] += 1
    return {"candidates": len(seen), "completed": sum(complete.values()),
            "duplicated": sum(n - 1 for n in complete.values() if n > 1),
            "lost": len(seen - set(complete)), "states": dict(states)}


def run_load(url: str, workers: int, sleep: float) -> dict:
    name = f"load-{workers}-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    processes = [subprocess.Popen(worker_command(url, name, sleep), cwd=ROOT, stdout=subprocess.PIPE, text=True)
                 for _ in range(workers)]
    outputs = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in processes]
    seconds = time.perf_counter() - start
    counts = tally(url, name)
    same = all(o["chosen"] == EXPECTED for o in outputs)
    return {"workers": workers, "seconds": seconds, "trials_per_second": counts["completed"] / seconds,
            "candidates": counts["candidates"], "duplicated": counts["duplicated"], "lost": counts["lost"],
            "winners_as_expected": same, "trials_run": [o["trials_run"] for o in outputs], "states": counts["states"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", required=True, help="Optuna storage URL shared by the workers")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to run (default 1,2,4)")
    parser.add_argument("--sleep", type=float, default=0.2, help="seconds per trial (default 0.2)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "search_load", help="report path, no suffix")
    parser.add_argument("--worker", action="store_true", help="run one worker and print its winners as JSON")
    parser.add_argument("--name", default="load", help="with --worker: the search's study-name prefix")
    parser.add_argument("--heartbeat", type=int, default=1)
    parser.add_argument("--grace", type=int, default=3)
    parser.add_argument("--outage", type=float, default=60, help="seconds a worker waits for a lost database")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.storage, args.name, args.sleep, args.heartbeat, args.grace, args.outage)))
        return 0
    import pandas as pd

    from gloro_repro.io import atomic_open, write_json

    rows = [run_load(args.storage, int(n), args.sleep) for n in args.workers.split(",")]
    write_json(args.out.with_suffix(".json"), {"storage": args.storage.split(":")[0],
                                               "sleep_per_trial": args.sleep, "rows": rows})
    table = pd.DataFrame([{k: (f"{v:.2f}" if isinstance(v, float) else v) for k, v in row.items() if k != "states"}
                          for row in rows])
    with atomic_open(args.out.with_suffix(".md"), "w") as handle:
        handle.write(f"# Search storage under load\n\nControlled search ({args.sleep} s per trial, known winners), "
                     f"`python -m benchmarks.search_load`; storage: PostgreSQL.\n\n{table.to_markdown(index=False)}\n")
    print(table.to_string(index=False))
    return 0 if all(r["duplicated"] == 0 and r["lost"] == 0 and r["winners_as_expected"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
