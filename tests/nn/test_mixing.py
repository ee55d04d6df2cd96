from __future__ import annotations

import pytest
import torch

from stmix.nn import cutmix, mix_pixels, sample_lambda


def test_mix_pixels_is_the_convex_combination():
    torch.manual_seed(0)
    a, b = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    lam = torch.tensor([0.0, 0.25, 0.5, 1.0])
    mixed, same = mix_pixels(a, b, lam)
    torch.testing.assert_close(mixed, lam.view(-1, 1, 1, 1) * a + (1 - lam.view(-1, 1, 1, 1)) * b)
    assert same is lam


def test_cutmix_target_share_is_the_area_kept():
    torch.manual_seed(0)
    a, b = torch.zeros(64, 3, 32, 32), torch.ones(64, 3, 32, 32)
    lam = torch.rand(64)
    mixed, kept = cutmix(a, b, lam)
    from_a = (mixed == 0).float().mean(dim=(1, 2, 3))
    torch.testing.assert_close(kept, from_a)
    # clipping at the border only keeps more of x_i; rounding to pixels moves it by < 2 rows
    assert (kept >= lam - 2 * 32 / 32**2).all()
    assert abs((kept - lam).mean().item()) < 0.2


@pytest.mark.parametrize("alpha", [0.4, 1.0, 2.0])
def test_lambda_is_beta(alpha):
    torch.manual_seed(0)
    lam = sample_lambda(40_000, alpha, "cpu")
    assert lam.min() >= 0 and lam.max() <= 1
    assert lam.mean().item() == pytest.approx(0.5, abs=0.01)
    variance = 1 / (4 * (2 * alpha + 1))
    assert lam.var().item() == pytest.approx(variance, rel=0.05)
    with pytest.raises(ValueError, match="alpha"):
        sample_lambda(3, 0.0, "cpu")


def test_cutmix_boxes_are_squares_of_the_share_and_reach_every_border():
    torch.manual_seed(0)
    n, size = 400, 32
    mixed, kept = cutmix(torch.zeros(n, 1, size, size), torch.ones(n, 1, size, size),
                         torch.full((n,), 0.75))  # fmt: skip
    box = mixed[:, 0] == 1
    rows, cols = box.any(dim=2), box.any(dim=1)
    height, width = rows.sum(dim=1), cols.sum(dim=1)
    assert (box.sum(dim=(1, 2)) == height * width).all()  # one rectangle
    # a side of sqrt(1 - 0.75) = half the image, shorter only where the border clips it
    assert ((height == size // 2) | rows[:, 0] | rows[:, -1]).all()
    assert ((width == size // 2) | cols[:, 0] | cols[:, -1]).all()
    assert (height < size // 2).any() and (width < size // 2).any()
    for edge in (rows[:, 0], rows[:, -1], cols[:, 0], cols[:, -1]):
        assert edge.any()  # centres are uniform over the whole image
    torch.testing.assert_close(kept, 1 - box.float().mean(dim=(1, 2)))


def test_mix_pixels_mixes_vectors_and_keeps_the_images_dtype():
    a, b = torch.zeros(3, 4, dtype=torch.float64), torch.ones(3, 4, dtype=torch.float64)
    lam = torch.tensor([1.0, 0.75, 0.0])
    mixed, _ = mix_pixels(a, b, lam)
    assert mixed.dtype == torch.float64
    torch.testing.assert_close(mixed, (1 - lam)[:, None].expand(3, 4).double())
    images = torch.zeros(2, 3, 2, 2, dtype=torch.bfloat16)
    mixed, same = mix_pixels(images, images + 1, torch.tensor([0.5, 0.25], dtype=torch.float64))
    assert mixed.dtype == torch.bfloat16 and same.dtype == torch.float64
    assert mixed[:, 0, 0, 0].tolist() == [0.5, 0.75]


@pytest.mark.parametrize("alpha", [-1.0, float("nan")])
def test_alpha_must_be_positive(alpha):
    with pytest.raises(ValueError, match=f"`alpha` must be positive, not {alpha}"):
        sample_lambda(3, alpha, "cpu")


@pytest.mark.parametrize("alpha", [0.2, 1.0, 5.0])
def test_lambda_shape_and_device(alpha):
    lam = sample_lambda(7, alpha, torch.device("cpu"))
    assert lam.shape == (7,) and lam.dtype == torch.float32 and lam.device.type == "cpu"
    assert len(set(lam.tolist())) == 7
