"""Markdown rendering of a benchmark run (pandas tables), each ratio beside its goal."""
from __future__ import annotations

import pandas as pd

# section -> (title, explanation, {column: (header, format)})
TABLES = {
    "architectures": (
        "Training step, certification and memory per instance",
        "Training: GloRo step (5 power iterations, m+1 logits, TRADES, backward through K, Adam) / plain step "
        "(CE on the same network, Adam), both in IEEE float32 as the train stage runs them by default; power "
        "iteration's share is its time / the plain step. On CUDA both "
        "steps also replayed from CUDA graphs (forward and backward one graph, fused Adam), the pipeline's "
        "default there; the goal columns judge the pipeline's own steps (graphed on CUDA, eager on a CPU) "
        "against the plain step run the same way, and 'vs plain eager' against the eager plain step. "
        "Certification: plain inference time / `certify` time on the same batch (throughput ratio), with the "
        "power bound and with the provable bound (float64, K_sound and rounding computed once). Memory: "
        "Appendix E per instance (GPU: peak allocated; CPU: bytes saved for backward in training, bytes "
        "created by the forward pass in certification).",
        {"architecture": ("arch", "{}"), "input": ("input", "{}"), "batch": ("batch", "{}"),
         "repeats": ("repeats", "{}"),
         "plain_step_ms": ("plain step ms", "{:.2f}"), "gloro_step_ms": ("GloRo step ms", "{:.2f}"),
         "train_ratio_eager": ("train ratio eager", "{:.3f}"),
         "plain_graphed_ms": ("plain step ms graphed", "{:.2f}"),
         "gloro_graphed_ms": ("GloRo step ms graphed", "{:.2f}"),
         "train_ratio_graphed": ("train ratio graphed", "{:.3f}"),
         "gloro_graphed_over_plain_eager": ("GloRo graphed / plain eager", "{:.3f}"),
         "train_ratio": ("train ratio (goal <= 1.10)", "{:.3f}"), "train_met": ("train goal met", "{}"),
         "power_iteration_share": ("power iteration share (eager)", "{:.3f}"),
         "cert_throughput_ratio_eager": ("cert ratio eager", "{:.3f}"),
         "cert_graphed_vs_plain_eager": ("cert graphed vs plain eager", "{:.3f}"),
         "cert_throughput_ratio": ("cert throughput ratio (goal >= 0.9)", "{:.3f}"),
         "cert_met": ("cert goal met", "{}"),
         "sound_cert_throughput_ratio_eager": ("provable cert ratio eager", "{:.3f}"),
         "sound_graphed_vs_plain_eager": ("provable cert graphed vs plain eager", "{:.3f}"),
         "sound_cert_throughput_ratio": ("provable cert throughput ratio", "{:.3f}"),
         "train_mb_standard": ("train MB/inst Standard", "{:.3f}"), "train_mb_gloro": ("train MB/inst GloRo", "{:.3f}"),
         "train_mb_ratio": ("train MB ratio", "{:.3f}"), "cert_mb_ratio": ("cert MB ratio", "{:.3f}")}),
    "one_off": (
        "One-off costs before certifying: power iteration to convergence and the sound bound",
        "From a freshly initialised network (random iterates, Glorot weights), to relative tolerance 1e-5 per "
        "layer; time expressed in plain inference batches of 256.",
        {"architecture": ("arch", "{}"), "converge_iterations_max": ("iterations (slowest layer)", "{}"),
         "converge_iterations_total": ("iterations (all layers)", "{}"), "converge_s": ("converge s", "{:.3f}"),
         "converge_in_inference_batches": ("converge, in inference batches", "{:.1f}"),
         "sound_bound_s": ("sound bound s", "{:.3f}"),
         "sound_in_inference_batches": ("sound bound, in inference batches", "{:.1f}")}),
    "epochs": (
        "A pipeline training epoch against its bare forward/backward passes (Figure D.1a settings)",
        "Lightning epoch of the pipeline's GloroModule and ArraysDataModule (in-memory uint8 data, scaling, the "
        "experiment's augmentation, logging) / the same GloRo steps on batches prepared beforehand on the "
        "device; then the epoch extrapolated to the full training set, against the paper's GPU seconds.",
        {"experiment": ("experiment", "{}"), "batch": ("batch", "{}"), "augmentation": ("augmentation", "{}"),
         "images_timed": ("images timed", "{}"), "lightning_epoch_s": ("pipeline epoch s", "{:.2f}"),
         "bare_epoch_s": ("bare s", "{:.2f}"), "epoch_ratio": ("ratio (goal <= 1.10)", "{:.3f}"),
         "epoch_met": ("met", "{}"), "s_per_full_epoch": ("s/epoch, full data", "{:.1f}"),
         "paper_s_per_epoch": ("paper s/epoch (GPU)", "{}"), "speed_vs_paper": ("paper / ours", "{:.3f}")}),
    "lower_bounds": (
        "Lower-bound optimisation (Appendix F) throughput, all pairs batched",
        "Adam steps on pairs of a 2C2F network, pair-steps per second; speed-up against optimising one pair "
        "at a time, timed in the same loop.",
        {"pairs": ("pairs per batch", "{}"), "pair_steps_per_s": ("pair-steps/s", "{:.0f}"),
         "speedup_vs_one_at_a_time": ("speed-up", "{:.1f}")}),
    "scaling": (
        "Scaling with batch size and input size",
        "The same ratios as above (train: GloRo / plain step time; cert: throughput ratio; memory: GloRo / "
        "Standard per instance).",
        {"architecture": ("arch", "{}"), "input": ("input", "{}"), "batch": ("batch", "{}"),
         "plain_step_ms": ("plain step ms", "{:.1f}"), "train_ratio": ("train ratio", "{:.3f}"),
         "cert_throughput_ratio": ("cert throughput ratio", "{:.3f}"), "train_mb_ratio": ("train MB ratio", "{:.3f}"),
         "cert_mb_ratio": ("cert MB ratio", "{:.3f}")}),
    "profile": (
        "Profile of the GloRo training step (2C2F, batch 256)",
        "torch.profiler, operators by self time over 5 steps.",
        {"operator": ("operator", "{}"), "self_time_share": ("share of self time", "{:.3f}"),
         "calls_per_step": ("calls per step", "{:.0f}")}),
}

COMPARED = {"plain_step_ms": "plain step ms", "gloro_step_ms": "GloRo step ms", "train_ratio": "train ratio",
            "cert_throughput_ratio": "cert throughput ratio", "train_mb_gloro": "train MB/inst GloRo"}


def table(rows: list[dict], columns: dict[str, tuple[str, str]]) -> str:
    headers = [header for header, _ in columns.values()]
    if len(set(headers)) != len(headers):
        raise ValueError(f"duplicate column headers would overwrite each other: {headers}")
    df = pd.DataFrame(rows)
    present = [c for c in columns if c in df.columns]
    out = pd.DataFrame({columns[c][0]: [columns[c][1].format(v) for v in df[c]] for c in present})
    return out.to_markdown(index=False, disable_numparse=True)


def comparison(before: dict, after: dict) -> str:
    """Before/after table of the architectures section: each run's own ratios, side by side."""
    old = {(r["architecture"], r.get("batch", 256)): r for r in before["sections"].get("architectures", [])}
    rows = []
    for row in after["sections"].get("architectures", []):
        match = old.get((row["architecture"], row.get("batch", 256)))
        if match is not None:
            entry = {"arch": row["architecture"], "batch": str(row.get("batch", 256))}
            for key, label in COMPARED.items():
                entry[f"{label} before"] = f"{match[key]:.3f}"
                entry[f"{label} after"] = f"{row[key]:.3f}"
            rows.append(entry)
    if not rows:
        return "(no architectures in common)"
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def render(results: dict, before: dict | None = None) -> str:
    lines = ["# Benchmarks: GloRo's cost against plain training and inference", "",
             f"Device: {results['device']}; torch {results['torch']}; {results['date']}; "
             f"median of {results['repeats']} interleaved repeats; command: `{results['command']}`.", ""]
    if not results["gpu"]:
        lines += ["**No GPU:** this run is on the CPU; no GPU machine was available, so the GPU timings "
                  "(paper seconds per epoch, CUDA peak memory) are not measured here.", ""]
    for name, rows in results["sections"].items():
        title, explanation, columns = TABLES[name]
        lines += [f"## {title}", "", explanation, "", table(rows, columns), ""]
    if before is not None:
        lines += ["## Before and after profiling", "",
                  f"Before: {before['date']}, `{before['command']}` on {before['device']}, with the code "
                  f"before the changes listed in the README; after: this run. Each ratio is against its own "
                  f"run's baseline; absolute milliseconds come from separate runs.", "",
                  comparison(before, results), ""]
    return "\n".join(lines)
