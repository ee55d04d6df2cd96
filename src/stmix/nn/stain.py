"""Stain augmentation: H&E images re-coloured as another lab's stain, batched on the device.

Tellez et al. (2018, "Whole-slide mitosis detection in H&E breast histology using PHH3 as a
reference to train distilled stain-invariant convolutional networks") jitter each image in the
haematoxylin-eosin-DAB space of Ruifrok & Johnston (2001): every stain channel is scaled by
1 + U(-σ, σ) and shifted by U(-σ, σ) (their "HED-light" uses σ = 0.05), then turned back to RGB.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, DAB), as scikit-image's
#: ``rgb_from_hed``: optical density of each stain in R, G, B.
RGB_FROM_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32
)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
#: Lowest intensity before the logarithm (an RGB value of 0 has infinite optical density).
FLOOR = 1e-6


def to_hed(rgb: Tensor) -> Tensor:
    """Stain concentrations (..., 3, H, W) of float RGB images (..., 3, H, W) in [0, 1]."""
    density = -torch.log(rgb.float().clamp_min(FLOOR))
    return torch.einsum("...chw,cd->...dhw", density, HED_FROM_RGB.to(rgb.device))


def from_hed(hed: Tensor) -> Tensor:
    """Float RGB images in [0, 1] of stain concentrations (..., 3, H, W)."""
    density = torch.einsum("...chw,cd->...dhw", hed, RGB_FROM_HED.to(hed.device))
    return torch.exp(-density).clamp_max(1.0)  # exp is positive: only the top needs a bound


def hed_jitter(
    images: Tensor, strength: float, *, generator: torch.Generator | None = None
) -> Tensor:
    """``images`` (N, 3, H, W, float in [0, 1]) each re-stained at random with ``strength`` σ.

    Images of k fields of view stacked along the channels (N, 3k, H, W) get one draw per image,
    the same for all its fields (one tissue, one stain). ``strength == 0`` returns the images
    unchanged.
    """
    if strength == 0:
        return images
    n, channels, height, width = images.shape
    fields = images.reshape(n, channels // 3, 3, height, width)
    shape = (n, 1, 3, 1, 1)
    scale = 1 + (torch.rand(shape, generator=generator, device=images.device) * 2 - 1) * strength
    shift = (torch.rand(shape, generator=generator, device=images.device) * 2 - 1) * strength
    stained = from_hed(to_hed(fields) * scale + shift).reshape(images.shape)
    return stained.to(images.dtype).contiguous(memory_format=torch.channels_last)
