"""HED stain jitter (Tellez et al.): exact round trip, bounded changes, one stain per image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.color import hed_from_rgb, rgb_from_hed

from stmix.nn import augment
from stmix.nn.images import to_float
from stmix.nn.sampling import UniformSampler
from stmix.nn.stain import RGB_FROM_HED, from_hed, hed_jitter, to_hed


def _images(n=6, side=16, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return to_float(torch.randint(30, 250, (n, side, side, 3), dtype=torch.uint8, generator=g))


def test_hed_uses_ruifrok_and_johnstons_vectors_and_round_trips():
    np.testing.assert_allclose(RGB_FROM_HED.numpy(), rgb_from_hed, atol=1e-6)
    x = _images()
    hed = to_hed(x)
    optical = -np.log(np.clip(x.permute(0, 2, 3, 1).numpy().astype(np.float64), 1e-6, None))
    np.testing.assert_allclose(
        hed.permute(0, 2, 3, 1).numpy(), optical @ hed_from_rgb, rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(from_hed(hed).numpy(), x.numpy(), atol=1e-5)
    dark = torch.zeros(1, 3, 2, 2)  # black has infinite optical density: held finite
    assert torch.isfinite(to_hed(dark)).all()


def test_jitter_recolours_each_image_within_its_strength():
    x = _images()
    assert hed_jitter(x, 0.0) is x
    torch.manual_seed(0)
    y = hed_jitter(x, 0.05)
    assert y.shape == x.shape and y.is_contiguous(memory_format=torch.channels_last)
    change = (y - x).abs().mean(dim=(1, 2, 3))
    assert (change > 0).all() and (change < 0.1).all()
    ratio = to_hed(y) / to_hed(x)  # one scale per image and stain, up to the shift
    assert ratio.std(dim=(2, 3)).mean() < ratio.std(dim=(0, 2, 3)).mean() * 50
    stronger = hed_jitter(x, 0.3)
    assert (stronger - x).abs().mean() > change.mean()


def test_mixing_recolours_anchor_and_partner_before_blending():
    torch.manual_seed(0)
    patches = torch.randint(30, 250, (10, 8, 8, 3), dtype=torch.uint8)
    mix = augment.Mix(UniformSampler(10), stain=0.1)
    step = mix(torch.arange(5), patches, torch.zeros(10, 3))
    x_mix, x_i, x_j = step.inputs.chunk(3)
    lam = step.lam.view(-1, 1, 1, 1)
    np.testing.assert_allclose(x_mix.numpy(), (lam * x_i + (1 - lam) * x_j).numpy(), atol=1e-5)
    plain = to_float(patches[:5])
    assert (x_i - plain).abs().mean() > 1e-3  # re-coloured
    assert augment.Mix(UniformSampler(10), stain=0.1).to("cpu").stain == pytest.approx(0.1)
    with pytest.raises(ValueError, match="re-colours images; these inputs are vectors"):
        augment.Plain(stain=0.1)(torch.arange(3), torch.zeros(5, 4), torch.zeros(5, 2))


def test_jitter_is_tellez_scale_and_shift_in_hed_and_stays_in_range():
    """Each image: HED × (1 + U(-σ, σ)) + U(-σ, σ), the draws in that order, back to RGB."""
    x, strength = _images(), 0.3
    drawn = torch.Generator().manual_seed(5)
    shape = (x.shape[0], 1, 3, 1, 1)
    scale = 1 + (torch.rand(shape, generator=drawn) * 2 - 1) * strength
    shift = (torch.rand(shape, generator=drawn) * 2 - 1) * strength
    expected = from_hed(to_hed(x.unsqueeze(1)) * scale + shift).squeeze(1)
    got = hed_jitter(x, strength, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, expected)
    assert from_hed(torch.full((1, 3, 2, 2), -1.0)).max() == 1.0  # less than no stain: white
    assert hed_jitter(x.double(), strength).dtype == torch.float64  # the images' own dtype
