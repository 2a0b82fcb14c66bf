"""Batched, on-device data augmentation with the paper's Keras semantics (Appendix B).

``default`` is Keras ``ImageDataGenerator(rotation_range=20, width_shift_range=0.2,
height_shift_range=0.2, horizontal_flip=True, shear_range=0.1, zoom_range=0.1,
fill_mode='nearest')``; ``tfds`` is a horizontal flip, zoom_range 0.25 and a brightness delta in
[-0.2, 0.2] clipped to [0, 1]; ``none`` is the identity.

Each sample draws its own parameters. As in Keras's ``apply_affine_transform``, they form a
matrix that maps every output pixel (row, col) to the input position it samples,
``rotation @ shift @ shear @ zoom`` about the image centre (zoom > 1 samples a larger area, so
the content shrinks), and the input is read with bilinear interpolation, replicating the border
outside the image (Keras's order=1 with fill_mode 'nearest'). The whole batch is warped with one
``grid_sample`` call; there is no per-image Python loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentationSpec:
    rotation: float = 0.0  # degrees, uniform in [-r, r]
    shift: float = 0.0  # fraction of height / width, uniform in [-s, s]
    shear: float = 0.0  # degrees (Keras's unit), uniform in [-s, s]
    zoom: float = 0.0  # per-axis zoom uniform in [1 - z, 1 + z]
    flip: bool = False  # horizontal flip with probability 1/2
    brightness: float = 0.0  # additive delta uniform in [-b, b], then clipped to [0, 1]


AUGMENTATIONS = {
    "none": AugmentationSpec(),
    "default": AugmentationSpec(rotation=20, shift=0.2, shear=0.1, zoom=0.1, flip=True),
    "tfds": AugmentationSpec(zoom=0.25, flip=True, brightness=0.2),
}


def _uniform(n: int, bound: float, generator: torch.Generator | None, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator, device=device) * 2 - 1) * bound


class Augment(torch.nn.Module):
    """Augment a float batch ``[N, C, H, W]`` in [0, 1] with per-sample random parameters."""

    def __init__(self, kind: str = "none", seed: int | None = None):
        super().__init__()
        if kind not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {kind!r}; expected one of {sorted(AUGMENTATIONS)}")
        self.kind, self.spec, self.seed = kind, AUGMENTATIONS[kind], seed
        self._generator: torch.Generator | None = None
        self._resume: torch.Tensor | None = None

    def generator(self, device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != torch.device(device):
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
            if self._resume is not None:
                self._generator.set_state(self._resume)
                self._resume = None
        return self._generator

    def state(self) -> torch.Tensor | None:
        """The random stream's position (None before the first draw), for a checkpoint."""
        return None if self._generator is None else self._generator.get_state()

    def resume(self, state: torch.Tensor | None) -> None:
        """Go on from ``state()``'s position at the next draw."""
        self._generator, self._resume = None, state

    def sample(self, n: int, height: int, width: int, device="cpu") -> dict[str, torch.Tensor]:
        """Per-sample parameters: angles in degrees, shifts in pixels, zooms, flips, brightness."""
        g, s = self.generator(device), self.spec
        return {
            "theta": _uniform(n, s.rotation, g, device),
            "tx": _uniform(n, s.shift, g, device) * height,  # rows
            "ty": _uniform(n, s.shift, g, device) * width,  # columns
            "shear": _uniform(n, s.shear, g, device),
            "zx": 1 + _uniform(n, s.zoom, g, device),
            "zy": 1 + _uniform(n, s.zoom, g, device),
            "flip": (torch.rand(n, generator=g, device=device) < 0.5) & s.flip,
            "brightness": _uniform(n, s.brightness, g, device),
        }

    def forward(self, x: torch.Tensor, offset: int = 0, total: int | None = None) -> torch.Tensor:
        """Augment ``x``, rows ``offset`` onwards of a batch of ``total`` (default ``len(x)``): the
        parameters are drawn for the whole batch, so a batch split among processes is augmented as one."""
        if self.kind == "none":
            return x
        drawn = self.sample(len(x) if total is None else total, x.shape[2], x.shape[3], x.device)
        return apply(x, {k: v[offset:offset + len(x)] for k, v in drawn.items()}, clip=self.spec.brightness > 0)


def sampling_matrices(p: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
    """Keras's transform: maps output (row, col, 1) to the sampled input position. ``[N, 3, 3]``."""
    n, device = len(p["theta"]), p["theta"].device
    eye = torch.eye(3, device=device).repeat(n, 1, 1)
    theta, shear = torch.deg2rad(p["theta"]), torch.deg2rad(p["shear"])
    rotation, shift, shear_m, zoom = eye.clone(), eye.clone(), eye.clone(), eye.clone()
    rotation[:, 0, 0], rotation[:, 0, 1], rotation[:, 1, 0], rotation[:, 1, 1] = theta.cos(), -theta.sin(), theta.sin(), theta.cos()
    shift[:, 0, 2], shift[:, 1, 2] = p["tx"], p["ty"]
    shear_m[:, 0, 1], shear_m[:, 1, 1] = -shear.sin(), shear.cos()
    zoom[:, 0, 0], zoom[:, 1, 1] = p["zx"], p["zy"]
    centre, uncentre = eye.clone(), eye.clone()
    centre[:, 0, 2], centre[:, 1, 2] = height / 2 - 0.5, width / 2 - 0.5
    uncentre[:, 0, 2], uncentre[:, 1, 2] = -(height / 2 - 0.5), -(width / 2 - 0.5)
    return centre @ rotation @ shift @ shear_m @ zoom @ uncentre


def _matrix3(rows: list[list[float]], device) -> torch.Tensor:
    """A 3x3 float32 matrix filled on ``device`` (no host-to-device copy per batch)."""
    m = torch.zeros(3, 3, device=device)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if value:
                m[i, j] = value
    return m


def apply(x: torch.Tensor, p: dict[str, torch.Tensor], clip: bool = False) -> torch.Tensor:
    """Warp, flip and brighten ``x`` ``[N, C, H, W]`` with the parameters ``p`` of ``Augment.sample``."""
    n, _, h, w = x.shape
    m = sampling_matrices(p, h, w)
    # to grid_sample's normalised (x = col, y = row) coordinates, align_corners=True: u = 2 i / (size - 1) - 1
    a, b = 2 / max(w - 1, 1), 2 / max(h - 1, 1)
    to_norm = _matrix3([[0, a, -1], [b, 0, -1], [0, 0, 1]], x.device)
    from_norm = _matrix3([[0, 1 / b, 1 / b], [1 / a, 0, 1 / a], [0, 0, 1]], x.device)
    theta = (to_norm @ m @ from_norm)[:, :2]
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=True)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    out = torch.where(p["flip"].view(n, 1, 1, 1), out.flip(-1), out)
    if clip:
        out = (out + p["brightness"].view(n, 1, 1, 1)).clamp(0, 1)
    return out


