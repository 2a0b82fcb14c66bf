"""Augmentation semantics: Keras's transform, parameter ranges, per-sample randomness, [0, 1]."""
import numpy as np
import pytest
import scipy.ndimage as ndimage
import torch

from gloro_repro.data.augment import Augment, apply, sampling_matrices

IDENTITY = dict(theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0, flip=False, brightness=0.0)


def params(n=1, **changes):
    p = {**IDENTITY, **changes}
    return {k: torch.full((n,), v) if k != "flip" else torch.full((n,), v, dtype=torch.bool) for k, v in p.items()}


def keras_reference(image, matrix):
    """What Keras's apply_affine_transform does: scipy's affine_transform, order 1, mode 'nearest'."""
    return np.stack([ndimage.affine_transform(c, matrix[:2, :2], matrix[:2, 2], order=1, mode="nearest")
                     for c in image.astype(np.float64)])


def test_random_batch_matches_keras_engine():
    aug = Augment("default", seed=0)
    x = torch.rand(16, 3, 32, 32)
    p = aug.sample(16, 32, 32)
    out, m = apply(x, p), sampling_matrices(p, 32, 32).numpy()
    for i in range(16):
        ref = keras_reference(x[i].numpy(), m[i])
        ref = ref[..., ::-1] if p["flip"][i] else ref
        assert np.abs(ref - out[i].numpy()).max() < 1e-4


def test_shift_moves_a_known_pattern():
    """Keras samples input row r + tx for output row r: the content moves by -tx rows."""
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 8] = 1.0
    out = apply(x, params(tx=3.0, ty=-2.0))[0, 0]
    assert divmod(out.argmax().item(), 16) == (5, 10) and out.max() == pytest.approx(1.0, abs=1e-5)


def test_rotation_by_90_degrees_and_zoom_about_the_centre():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 1, 4] = 1.0  # top centre; the centre is (4, 4)
    assert divmod(apply(x, params(theta=90.0))[0, 0].argmax().item(), 9) == (4, 7)
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 2, 4] = 1.0
    zoomed = apply(x, params(zx=2.0, zy=2.0))[0, 0]  # zoom 2 samples twice the area: content halves
    assert divmod(zoomed.argmax().item(), 9) == (3, 4) and zoomed.sum() == pytest.approx(1.0, abs=1e-5)


def test_border_is_replicated_not_zero_filled():
    x = torch.ones(1, 1, 8, 8)
    assert torch.allclose(apply(x, params(tx=4.0, ty=4.0)), x)


@pytest.mark.parametrize("kind,ranges", [
    ("default", dict(theta=20, tx=0.2 * 32, ty=0.2 * 24, shear=0.1, zx=(0.9, 1.1), zy=(0.9, 1.1), brightness=0)),
    ("tfds", dict(theta=0, tx=0, ty=0, shear=0, zx=(0.75, 1.25), zy=(0.75, 1.25), brightness=0.2)),
])
def test_parameter_ranges(kind, ranges):
    p = Augment(kind, seed=1).sample(5000, 32, 24)
    for key, bound in ranges.items():
        lo, hi = bound if isinstance(bound, tuple) else (-bound, bound)
        assert p[key].min() >= lo and p[key].max() <= hi
        if hi > lo:
            assert p[key].min() < lo + 0.02 * (hi - lo) and p[key].max() > hi - 0.02 * (hi - lo)
    assert 0.45 < p["flip"].float().mean() < 0.55


@pytest.mark.parametrize("kind", ["default", "tfds"])
def test_outputs_stay_in_unit_interval_and_samples_differ(kind):
    x = torch.rand(64, 3, 32, 32)
    out = Augment(kind, seed=2)(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    p = Augment(kind, seed=2).sample(64, 32, 32)
    assert len(set(p["zx"].tolist())) == 64


def test_tfds_brightness_is_added_and_clipped():
    x = torch.full((2, 3, 4, 4), 0.9)
    out = apply(x, params(2, brightness=0.2), clip=True)
    assert torch.allclose(out, torch.ones_like(x))


def test_none_is_identity_and_unknown_is_an_error():
    x = torch.rand(3, 1, 5, 5)
    assert torch.equal(Augment("none")(x), x)
    with pytest.raises(ValueError, match="unknown augmentation 'autoaugment'"):
        Augment("autoaugment")


def test_a_batch_split_among_processes_is_augmented_as_one():
    """Each DDP rank draws the parameters of the whole global batch and keeps its rows'."""
    x = torch.rand(10, 3, 16, 16)
    whole = Augment("default", seed=3)(x)
    parts = Augment("default", seed=3)
    assert torch.equal(parts(x[4:7], offset=4, total=10), whole[4:7])
