"""Macenko's stain normalisation: each image's haematoxylin and eosin unmixed, then re-mixed.

Macenko et al. (2009, "A method for normalizing histology slides for quantitative analysis")
work in optical density, OD = -log(I / Io): the two stains are the directions at the extreme
angles (percentiles :data:`ALPHA` and 100 - ALPHA) of the tissue pixels projected onto the plane
of their two largest principal components; each pixel's concentrations of the two stains are its
OD in that basis, scaled so that their 99th percentiles match the reference's, and the reference's
stain vectors colour them again. Constants as in the common implementations (torchstain, the
original MATLAB code): Io = 240, transparent below OD :data:`BETA`.
"""

from __future__ import annotations

import numpy as np

#: Light through glass (the original's Io).
IO = 240.0
#: Pixels with an optical density below this in any channel are glass, not tissue.
BETA = 0.15
#: Percentile of the angles that picks each stain's direction (robust extremes).
ALPHA = 1.0
#: Pixels sampled for the stain directions (enough for stable percentiles, bounded memory).
SAMPLE = 2**20
#: Pixels per block re-coloured at once.
BLOCK = 2**22


def _density(pixels: np.ndarray) -> np.ndarray:
    return -np.log((pixels.astype(np.float64) + 1.0) / IO)


def colours(patches: np.ndarray) -> dict:
    """The stain vectors (H first, unit OD vectors) and 99th percentile concentrations."""
    pixels = patches.reshape(-1, 3)
    if len(pixels) > SAMPLE:  # a fixed sample: the same patches give the same stains
        pixels = pixels[np.random.default_rng(0).choice(len(pixels), SAMPLE, replace=False)]
    od = _density(pixels)
    tissue = od[(od >= BETA).all(axis=1)]
    if len(tissue) < 3:
        raise ValueError("The patches hold no stained tissue (every pixel is glass): no stain.")
    _, vectors = np.linalg.eigh(np.cov(tissue.T))
    plane = vectors[:, [2, 1]]  # the two largest components, the largest first
    if plane[:, 0].sum() < 0:  # OD directions are positive: angles then lie in (-pi/2, pi/2)
        plane[:, 0] *= -1
    projected = tissue @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [ALPHA, 100 - ALPHA])
    first = plane @ np.array([np.cos(low), np.sin(low)])
    second = plane @ np.array([np.cos(high), np.sin(high)])
    stains = np.stack([first, second] if first[0] > second[0] else [second, first])
    stains = np.abs(stains) / np.linalg.norm(stains, axis=1, keepdims=True)
    amounts = np.linalg.pinv(stains.T) @ tissue.T
    return {"stains": stains.tolist(), "max": np.percentile(amounts, 99, axis=1).tolist()}


def check(target: dict) -> dict:
    """A reference as a model records it, checked: two unit stain vectors and their maxima."""
    stains = np.asarray(target.get("stains", []), dtype=np.float64)
    maxima = np.asarray(target.get("max", []), dtype=np.float64)
    if stains.shape != (2, 3) or maxima.shape != (2,) or not (maxima > 0).all():
        raise ValueError(
            "A Macenko `target` must be {'stains': [[3 numbers], [3 numbers]], 'max': [2 "
            "positive numbers]}."
        )
    return {"stains": stains.tolist(), "max": maxima.tolist()}


def moved(patches: np.ndarray, source: dict, target: dict) -> np.ndarray:
    """The patches' stains unmixed with ``source``'s vectors and re-mixed with ``target``'s."""
    unmix = np.linalg.pinv(np.asarray(source["stains"]).T)  # (2, 3)
    scale = (np.asarray(target["max"]) / np.asarray(source["max"]))[:, None]
    remix = np.asarray(target["stains"]).T  # (3, 2)
    pixels = patches.reshape(-1, 3)
    out = np.empty_like(pixels)
    for start in range(0, len(pixels), BLOCK):
        block = pixels[start : start + BLOCK]
        amounts = (unmix @ _density(block).T) * scale
        rgb = IO * np.exp(-(remix @ amounts).T)
        out[start : start + len(block)] = np.round(np.clip(rgb, 0, 255))
    return out.reshape(patches.shape)
