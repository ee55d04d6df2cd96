"""The ``basic`` augmentation: random flips, right-angle rotations and crops, batched."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def flip_rotate_crop(x: Tensor, scale: tuple[float, float] = (0.7, 1.0)) -> Tensor:
    """Randomly flip, rotate by a multiple of 90° and crop each image, back to its size.

    H&E patches have no orientation, so all eight flips/rotations are equally plausible. The
    crop keeps a random share ``scale`` of the area at a random position. Every sample gets its
    own transform, applied in one ``grid_sample`` call (bilinear, reflection at the border).
    """
    n = x.shape[0]
    device = x.device
    angle = torch.randint(0, 4, (n,), device=device).float() * (math.pi / 2)
    flip = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0)
    side = torch.sqrt(torch.empty(n, device=device).uniform_(*scale))
    shift_x = (torch.rand(n, device=device) * 2 - 1) * (1 - side)
    shift_y = (torch.rand(n, device=device) * 2 - 1) * (1 - side)
    cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift_x], dim=1),
            torch.stack([sin * flip, cos, shift_y], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
