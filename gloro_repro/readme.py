"""README's results table, generated from the committed ``results/metrics/*.json`` so it cannot go stale.

    python -m gloro_repro.readme            # rewrite the block between the markers in README.md
    python -m gloro_repro.readme --check    # exit 1 if README's block differs from the results

The block lies between ``<!-- results:start -->`` and ``<!-- results:end -->``; the test suite
runs ``--check``, so a result that changed without README following fails CI.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from gloro_repro.io import atomic_open

START, END = "<!-- results:start -->", "<!-- results:end -->"
COLUMNS = {"experiment": "experiment", "model": "model", "clean": "clean", "pgd": "attack", "vra": "VRA (power)",
           "vra_sound": "VRA (provable)", "ub_lb": "margin Lipschitz UB / LB", "sec_per_epoch": "s/epoch"}


def results_table(metrics_dir: Path = Path("results/metrics")) -> str:
    """One Markdown row per experiment with metrics: digits first, then the rest, by name."""
    rows = []
    for path in sorted(metrics_dir.glob("*.json")):
        m = json.loads(path.read_text())
        lb = m.get("lipschitz_global_lb")
        rows.append({
            "experiment": f"{m['experiment']} ({m['dataset']}, eps {m['eps']:g})", "model": m["model"],
            **{key: f"{100 * m[key]:.1f}" for key in ("clean", "pgd", "vra", "vra_sound")},
            "ub_lb": f"{m['lipschitz_global_ub']:.3g} / " + ("-" if lb is None else f"{lb:.3g}"),
            "sec_per_epoch": "-" if m.get("sec_per_epoch") is None else f"{m['sec_per_epoch']:.2f}",
            "order": (m["dataset"] != "digits", m["experiment"]),
        })
    frame = pd.DataFrame(rows).sort_values("order").drop(columns="order").rename(columns=COLUMNS)
    return frame.to_markdown(index=False, disable_numparse=True)


def with_block(readme: str, table: str) -> str:
    """``readme`` with the text between the markers replaced by ``table``."""
    if START not in readme or END not in readme:
        raise ValueError(f"README has no {START} ... {END} block")
    head, rest = readme.split(START, 1)
    return f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="default: README.md")
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics"), help="default: results/metrics")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the block is stale")
    args = parser.parse_args(argv)
    readme = args.readme.read_text()
    updated = with_block(readme, results_table(args.metrics))
    if args.check:
        if updated != readme:
            print(f"{args.readme}: the results block differs from {args.metrics}; run python -m gloro_repro.readme",
                  file=sys.stderr)
            return 1
        return 0
    with atomic_open(args.readme, "w") as handle:
        handle.write(updated)
    print(f"{args.readme}: results block rewritten from {args.metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
