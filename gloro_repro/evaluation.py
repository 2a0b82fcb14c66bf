"""Certification of a test set: clean accuracy, attack accuracy, VRA under both bounds, cost, and
the paper's statements checked on the actual outputs (Theorem 4, Lemma 1, Theorem 2).

Works on an ``ExportedModel`` (e.g. one loaded from ``model.pt2`` and ``lipschitz.json``), so the
numbers are those an outsider gets from the exported files. Runs on the device of ``x`` (the model
must be there too), with every tensor it builds made there, in IEEE float32 (and float64).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from gloro_repro.exported import ExportedModel
from gloro_repro.gloro.attacks import apgd_l2, pgd_l2
from gloro_repro.gloro.model import Certificate, batched_logits, certify_logits
from gloro_repro.gloro.precision import float32_precision
from gloro_repro.hardware import describe
from gloro_repro.measure import inference_mb_per_instance, timed

THEOREM_CHECKS = ("theorem4_certified_broken", "theorem4_certified_broken_sound", "lemma1_violations",
                  "theorem2_violations")


@dataclass(frozen=True)
class AttackSettings:
    """The strong attack: APGD-style L2 with each objective (CE, then the CW margin) and restarts."""

    steps: int
    restarts: int
    objectives: tuple[str, ...] = ("ce", "margin")


PLAIN_PGD = AttackSettings(steps=50, restarts=1, objectives=("ce",))


def attack_fools(f: Callable, x: torch.Tensor, labels: torch.Tensor, eps: float, settings: AttackSettings,
                 seed: int, batch_size: int = 500, attack: Callable = apgd_l2,
                 search: Callable | None = None) -> torch.Tensor:
    """Per point, whether any of the attacks (one per objective) finds an input within eps that f
    labels otherwise. Each objective only attacks the points the earlier ones did not break.

    ``search`` (default f) is the network whose gradients the attack follows, e.g. the module an
    exported graph was made from: the same function with a cheaper backward pass. Every input it
    finds is judged by f itself."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for objective in settings.objectives:
        for i in range(0, len(x), batch_size):
            xb, lb = x[i:i + batch_size], labels[i:i + batch_size]
            todo = ~fooled[i:i + batch_size]
            if not todo.any():
                continue
            adv = attack(search or f, xb[todo], lb[todo], eps, settings.steps, restarts=settings.restarts,
                         objective=objective, generator=generator)
            with torch.no_grad():
                hit = f(adv).argmax(dim=1) != lb[todo]
            idx = torch.nonzero(todo)[:, 0] + i
            fooled[idx[hit]] = True
    return fooled


def pair_violations(x: torch.Tensor, prediction: torch.Tensor, certified: torch.Tensor, distance: float,
                    block: int = 1024) -> tuple[int, int]:
    """Among certified points, (pairs within ``distance`` of each other, pairs of them with different
    predictions). Computed over all pairs, in blocks."""
    pts, pred = x[certified].flatten(1).double(), prediction[certified]
    close = differ = 0
    for i in range(0, len(pts), block):
        d = torch.cdist(pts[i:i + block], pts)
        rows = torch.arange(i, min(i + block, len(pts)), device=pts.device)[:, None]
        upper = torch.arange(len(pts), device=pts.device)[None] > rows  # each unordered pair once
        near = (d <= distance) & upper
        close += int(near.sum())
        differ += int((near & (pred[i:i + block, None] != pred[None])).sum())
    return close, differ


def radius_curve(certificate: Certificate, labels: torch.Tensor, radii: torch.Tensor) -> list[float]:
    """Certified accuracy at each radius: correct and certified radius >= r."""
    correct = certificate.prediction == labels
    return (correct[:, None] & (certificate.radius[:, None] >= radii[None])).float().mean(dim=0).tolist()


def certify_test_set(model: ExportedModel, x: torch.Tensor, y: torch.Tensor, attack: AttackSettings, seed: int = 0,
                     batch_size: int = 1000, search: Callable | None = None) -> dict:
    """All certification metrics of the model on (x, y) at its radius eps, with the theorem checks' counts.

    ``vra`` is the paper's certificate (the ``power`` bound: float32 logits against K from power
    iteration). ``vra_sound`` is provable (the ``sound`` bound: float64 logits against K_sound,
    margins reduced by the forward pass's rounding bound).

    Theorem 4: no certified point is broken by the attack (power and sound bounds). Lemma 1: no
    two certified points with different predictions lie within 2 eps. Theorem 2: points within
    eps that are both certified at eps/2 get the same prediction. The attacks follow ``search``'s
    gradients (``attack_fools``).

    Shape:
        ``x [N, C, H, W]`` in [0, 1], ``y [N]``.
    """
    with float32_precision("ieee"):
        return _certify_test_set(model, x, y, attack, seed, batch_size, search)


def _certify_test_set(model: ExportedModel, x, y, attack, seed, batch_size, search) -> dict:
    f, eps = model.f, model.eps
    logits, plain_seconds = timed(lambda: batched_logits(f, x, batch_size), x.device)  # the baseline
    cert, cert_seconds = timed(lambda: model.certify(x, bound="power", batch_size=batch_size), x.device)
    sound = model.certify(x, bound="sound", batch_size=batch_size)
    half = certify_logits(logits, model.k, eps / 2)
    correct = cert.prediction == y
    # attack the predicted label: accuracy under attack on correct points, and Theorem 4 on certified ones
    fooled = attack_fools(f, x, cert.prediction, eps, attack, seed, search=search)
    plain = attack_fools(f, x, cert.prediction, eps, PLAIN_PGD, seed, attack=pgd_l2, search=search)
    broken = int((cert.certified & fooled).sum())
    broken_sound = int((sound.certified & fooled).sum())
    lemma_pairs, lemma_violations = pair_violations(x, cert.prediction, cert.certified, 2 * eps)
    thm2_pairs, thm2_violations = pair_violations(x, half.prediction, half.certified, eps)
    radii = torch.linspace(0, 2 * eps, 41, device=x.device)
    metrics = {
        "n_test": len(x), "eps": eps, "device": describe(x.device), "torch_threads": torch.get_num_threads(),
        "clean": float(correct.float().mean()),
        "pgd": float((correct & ~fooled).float().mean()),
        "pgd_plain50": float((correct & ~plain).float().mean()),
        "broken_by_plain_not_strong": int((plain & ~fooled).sum()),
        "vra": float((correct & cert.certified).float().mean()),
        "vra_sound": float((correct & sound.certified).float().mean()),
        "rejection": float((~cert.certified).float().mean()),
        "certified": int(cert.certified.sum()), "certified_sound": int(sound.certified.sum()),
        "cert_seconds": cert_seconds, "plain_inference_seconds": plain_seconds,
        "cert_mem_mb_per_instance": inference_mb_per_instance(f, x[:batch_size]),
        "theorem4_certified_broken": broken, "theorem4_certified_broken_sound": broken_sound,
        "lemma1_pairs_within_2eps": lemma_pairs, "lemma1_violations": lemma_violations,
        "theorem2_pairs_within_eps": thm2_pairs, "theorem2_violations": thm2_violations,
        "attack": {"method": "APGD-style L2 (gloro_repro.gloro.attacks.apgd_l2)", "steps": attack.steps,
                   "restarts": attack.restarts, "objectives": list(attack.objectives), "seed": seed,
                   "baseline": "pgd_plain50: plain L2 PGD, CE, 50 steps of 2.5 eps / 50, 1 restart"},
        "radius_curve": {"radius": radii.tolist(), "certified_accuracy": radius_curve(cert, y, radii),
                         "certified_accuracy_sound": radius_curve(sound, y, radii)},
    }
    return metrics


def theorem_failures(metrics: dict) -> dict[str, int]:
    """The nonzero violation counts of a ``certify_test_set`` result (empty when all statements hold)."""
    return {key: metrics[key] for key in THEOREM_CHECKS if metrics[key]}
