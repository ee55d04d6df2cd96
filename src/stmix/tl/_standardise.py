"""How a head sees an embedding: standardised on the training spots and held to their range."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Standardisation:
    """``(x - center) / scale``, clipped to ``[low, high]`` (the training spots' range)."""

    center: np.ndarray  # (d,)
    scale: np.ndarray  # (d,); inf for a feature constant over the training spots
    low: np.ndarray  # (d,)
    high: np.ndarray  # (d,)

    @property
    def constant(self) -> int:
        """How many features are constant over the training spots (muted)."""
        return int(np.isinf(self.scale).sum())

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardised ``x``, held to the training spots' range."""
        return np.clip((x - self.center) / self.scale, self.low, self.high)


def standardise(x: np.ndarray) -> Standardisation:
    """The standardisation of the training embedding ``x`` (n, d), in ``x``'s dtype.

    A feature whose spread over the training spots is below 1e-6 of the largest spread says
    nothing about them: its scale is infinite, which mutes it (it may still vary on new spots,
    where a scale of 1 would let it through unlearnt).
    """
    spread = x.std(axis=0)
    scale = np.where(spread > 1e-6 * max(float(spread.max()), 1e-30), spread, np.inf)
    scale = scale.astype(x.dtype)
    center = x.mean(axis=0)
    z = (x - center) / scale
    return Standardisation(center, scale, z.min(axis=0), z.max(axis=0))
