"""A/B of where the training step's power iterations run, on CUDA: every layer on the current stream
before the forward pass (the code before 2026-11-30), the last layer left out (still one stream), and
each layer on a side stream beside the forward pass (``GloroNet.logits_and_bounds`` now). Each graphed
GloRo step is timed against the graphed plain step, interleaved, in one process.

    python -m benchmarks.streams_ab --out results/streams_ab.json     # about 40 s on an H200
"""
from __future__ import annotations

import argparse

import torch

from gloro_repro.io import write_json

from .timing import interleaved, median_ms, median_ratio
from .workloads import ARCHITECTURES, Workload


def one_stream(net, layers):
    """``logits_and_bounds`` as it was: ``layers(net)`` iterated in order, then the forward pass."""
    def logits_and_bounds(x):
        for layer in layers(net):
            layer.power_iterate(net.power_iterations)
        return net.f(x), net.k_ij()
    return logits_and_bounds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="streams_ab.json", help="JSON file for the rows")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (off CUDA the three arms are the same code)")
    device, rows = torch.device("cuda"), []
    for batch in args.batch_sizes:
        for arch in ARCHITECTURES:
            ws = {name: Workload.build(arch, batch, device) for name in ("old", "skip_last", "beside")}
            ws["old"].net.logits_and_bounds = one_stream(ws["old"].net, lambda n: n.layers)
            ws["skip_last"].net.logits_and_bounds = one_stream(ws["skip_last"].net, lambda n: n.layers[:-1])
            work = {"plain": lambda: ws["beside"].graphed_step("plain")}
            work |= {name: (lambda w=w: w.graphed_step("gloro")) for name, w in ws.items()}
            times = interleaved(work, args.repeats, device)
            row = {"arch": arch, "batch": batch, "plain_ms": median_ms(times, "plain")}
            for name in ws:
                row[f"{name}_ms"] = median_ms(times, name)
                row[f"{name}_ratio"] = median_ratio(times, name, "plain")
            rows.append(row)
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    write_json(args.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
