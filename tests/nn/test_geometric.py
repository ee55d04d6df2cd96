"""The ``basic`` augmentation: flips, right-angle rotations and crops."""

from __future__ import annotations

import warnings

import pytest
import torch

from stmix.nn import flip_rotate_crop


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The eight flips and right-angle rotations of an image."""
    return [torch.rot90(f, k, dims=(-2, -1)) for f in (x, x.flip(-1)) for k in range(4)]


def test_flips_and_rotations_permute_pixels():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 12, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's notice about a default align_corners
        out = flip_rotate_crop(x, scale=(1.0, 1.0))
    for i in range(16):
        torch.testing.assert_close(out[i].flatten().sort().values, x[i].flatten().sort().values)
    assert not torch.allclose(out, x)  # some sample was transformed


def test_all_eight_orientations_come_equally_often():
    torch.manual_seed(0)
    base = torch.rand(1, 1, 5, 5)
    out = flip_rotate_crop(base.repeat(800, 1, 1, 1), scale=(1.0, 1.0))
    candidates = _dihedral(base[0])
    counts = [0] * 8
    for image in out:
        (match,) = [i for i, c in enumerate(candidates) if torch.allclose(image, c, atol=1e-5)]
        counts[match] += 1
    assert min(counts) > 60 and max(counts) < 140  # 100 each expected; measured 83-115


def _ramps(n: int, size: int = 64) -> torch.Tensor:
    """Channel 0 rises from 0 to 1 left to right, channel 1 top to bottom."""
    ramp = torch.linspace(0, 1, size)
    return torch.stack([ramp.expand(size, size), ramp[:, None].expand(size, size)])[None].repeat(
        n, 1, 1, 1
    )


def test_a_crop_keeps_its_share_of_the_area_inside_the_image():
    torch.manual_seed(1)
    out = flip_rotate_crop(_ramps(300), scale=(0.25, 0.25))  # a side of 0.5
    low, high = out.amin(dim=(2, 3)), out.amax(dim=(2, 3))
    span = high - low  # a window reaching past the border would fold back (reflection)
    assert ((span > 0.49) & (span < 0.51)).all()  # measured 0.496-0.500, both directions
    centre = (low + high) / 2
    assert (centre >= 0.24).all() and (centre <= 0.76).all()
    # uniform over [0.25, 0.75] (seen flipped or not): |centre - 0.5| averages 0.125
    offset = (centre - 0.5).abs().mean(dim=0)
    assert ((offset - 0.125).abs() < 0.02).all()


def test_crop_areas_are_uniform_over_the_scale():
    torch.manual_seed(1)
    out = flip_rotate_crop(_ramps(300), scale=(0.25, 1.0))
    span = out.amax(dim=(2, 3)) - out.amin(dim=(2, 3))
    area = span[:, 0] * span[:, 1]
    assert area.min() > 0.24 and area.max() < 1.0
    assert area.mean().item() == pytest.approx(0.625, abs=0.04)  # the mean of U(0.25, 1)


def test_crops_zoom_in():
    x = torch.zeros(8, 1, 16, 16)
    x[:, :, :, :8] = 1.0  # left half bright
    torch.manual_seed(0)
    out = flip_rotate_crop(x, scale=(0.25, 0.25))
    # a quarter-area crop of a half-bright image is often all one colour, never all of both
    assert out.shape == x.shape
    assert ((out.mean(dim=(1, 2, 3)) - 0.5).abs() > 0.05).any()


def test_images_keep_their_dtype():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    out = flip_rotate_crop(x)
    assert out.dtype == torch.float64 and out.shape == x.shape
