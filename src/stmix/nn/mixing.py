"""Mixing two batches of images: pixel-wise (mixup family) and box-wise (CutMix)."""

from __future__ import annotations

import torch
from torch import Tensor


def sample_lambda(n: int, alpha: float, device: torch.device | str) -> Tensor:
    """``n`` mixing ratios from Beta(alpha, alpha) (alpha = 1: uniform on [0, 1])."""
    if not alpha > 0:
        raise ValueError(f"`alpha` must be positive, not {alpha}.")
    if alpha == 1.0:
        return torch.rand(n, device=device)
    a = torch.full((n,), float(alpha), device=device)
    return torch.distributions.Beta(a, a).sample()


def mix_pixels(x_i: Tensor, x_j: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """``lam x_i + (1 - lam) x_j`` for each sample; returns the images and ``lam`` unchanged."""
    w = lam.view(-1, *([1] * (x_i.ndim - 1))).to(x_i.dtype)
    return torch.lerp(x_j, x_i, w), lam


def cutmix(x_i: Tensor, x_j: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """Paste a box of ``x_j`` covering a share ``1 - lam`` of the image into ``x_i``.

    Each sample gets its own box (centre uniform over the image, clipped at the border), all in
    one batched operation. Returns the images and the share of each image still from ``x_i``,
    which weights the targets (``lam`` corrected for clipping).
    """
    n, _, height, width = x_i.shape
    device = x_i.device
    cut = torch.sqrt(1.0 - lam.float())
    cy = torch.rand(n, device=device) * height
    cx = torch.rand(n, device=device) * width
    y0 = (cy - cut * height / 2).clamp(0, height).round()
    y1 = (cy + cut * height / 2).clamp(0, height).round()
    x0 = (cx - cut * width / 2).clamp(0, width).round()
    x1 = (cx + cut * width / 2).clamp(0, width).round()
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    box = (
        (rows >= y0.view(-1, 1, 1))
        & (rows < y1.view(-1, 1, 1))
        & (cols >= x0.view(-1, 1, 1))
        & (cols < x1.view(-1, 1, 1))
    )
    mixed = torch.where(box.unsqueeze(1), x_j, x_i)
    kept = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    return mixed, kept
