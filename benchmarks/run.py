"""GloRo's cost against plain training and inference, measured side by side.

Writes ``<out>.json`` and ``<out>.md`` (default ``results/benchmarks``). Every figure is a ratio
against a baseline timed in the same loop, interleaved with it, as the median over repeats:

  architectures  GloRo training step / plain step (goal <= 1.10), certification / plain inference
                 throughput (goal >= 0.9), memory per instance GloRo / Standard; batch 256 (--batch-sizes);
                 on CUDA eager and replayed from CUDA graphs, side by side
  one_off        power iteration to convergence (tol 1e-5) and the sound bound, in inference batches
  epochs         a pipeline (Lightning) epoch with data and augmentation / bare forward-backward
                 passes of the same batches (goal <= 1.10), and s/epoch against the paper's
  lower_bounds   Appendix F's optimisation with all pairs batched / one pair at a time
  scaling        the ratios against batch size (64..1024) and input size (28, 32, 64)
  profile        the GloRo step's operators by self time (torch.profiler)

    .venv/bin/python -m benchmarks.run                       # everything, ~15 min on 2 CPU cores
    .venv/bin/python -m benchmarks.run --sections architectures --repeats 3
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from gloro_repro.hardware import Hardware
from gloro_repro.io import atomic_open, write_json

from .report import render
from .sections import SECTIONS


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS),
                        help="sections to run (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per figure; the median is kept")
    parser.add_argument("--device", default=None,
                        help="torch device (default: GLORO_ACCELERATOR's, i.e. cuda when available)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256],
                        help="batch sizes of the architectures section (default: 256)")
    parser.add_argument("--out", default="results/benchmarks", help="output path without extension")
    parser.add_argument("--before", default="results/benchmarks_before.json",
                        help="an earlier run's JSON to compare against (skipped when absent)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if min(args.batch_sizes) < 1:
        parser.error(f"--batch-sizes must be >= 1, got {args.batch_sizes}")
    device = torch.device(args.device) if args.device else Hardware.from_env().device()
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")

    results = {"device": describe_device(device), "gpu": device.type == "cuda", "torch": torch.__version__,
               "date": datetime.date.today().isoformat(), "repeats": args.repeats,
               "command": " ".join(["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]),
               "sections": {}}
    with torch.random.fork_rng():
        for name in tqdm(args.sections, desc="benchmarks", unit="section"):
            tqdm.write(f"running {name} ...")
            extra = {"batch_sizes": tuple(args.batch_sizes)} if name == "architectures" else {}
            results["sections"][name] = SECTIONS[name](device, args.repeats, **extra)
    before = Path(args.before)
    comparable = before.exists() and before.resolve() != Path(f"{args.out}.json").resolve()
    previous = json.loads(before.read_text()) if comparable else None
    write_json(f"{args.out}.json", results)
    with atomic_open(f"{args.out}.md", "w") as handle:
        handle.write(render(results, previous))
    print(f"wrote {args.out}.json and {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
