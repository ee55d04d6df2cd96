"""Patches as slides spoil them: glass, blur, a pen mark, another lab's stain (HED jitter).

Used by the tests of the flag of unfamiliar tissue and by ``benchmarks/uncertainty.py``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def artefacts(patches: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Blank glass, blur, a pen mark, and another stain (HED jitter), of real patches."""
    from skimage.color import hed2rgb, rgb2hed

    rng = np.random.default_rng(seed)
    radius = patches.shape[1] / 16  # out of focus: 4 px at 64 px, 14 px at 224 px
    blurred = np.stack(
        [np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(radius))) for p in patches]
    )
    pen = patches.copy()
    pen[:, :, : patches.shape[2] // 2] = (30, 60, 200)  # a blue marker over half the patch
    hed = rgb2hed(patches / 255.0)
    shifted = hed * rng.uniform(0.3, 0.5, 3) + rng.uniform(0.05, 0.1, 3)
    stained = (np.clip(hed2rgb(shifted), 0, 1) * 255).astype(np.uint8)
    return {
        "blank": np.full_like(patches, 245),
        "blur": blurred,
        "pen": pen,
        "stain": stained,
    }
