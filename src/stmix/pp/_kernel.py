"""The expression kernel of SNR-ST-Mix (NumPy), shared by ``pp.neighbors`` and C-Mixup."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.spatial.distance import pdist

from stmix import _distance

Kernel = Literal["gaussian", "reference"]
KERNELS: tuple[str, ...] = ("gaussian", "reference")

#: Above this many distinct pairs the median distance is estimated from a random sample of pairs.
EXACT_PAIRS = 500_000
SAMPLED_PAIRS = 200_000


def median_distance(y: np.ndarray, *, seed: int = 0) -> float:
    """Median Euclidean distance between distinct rows of ``y``.

    Exact over all ``n (n - 1) / 2`` pairs when there are at most :data:`EXACT_PAIRS` of them,
    else estimated from :data:`SAMPLED_PAIRS` random pairs (seeded), so memory stays linear in
    the number of rows.
    """
    n = len(y)
    if n < 2:
        raise ValueError("The median distance needs at least two spots.")
    if n * (n - 1) // 2 <= EXACT_PAIRS:
        return float(np.median(pdist(y)))
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, SAMPLED_PAIRS)
    j = (i + rng.integers(1, n, SAMPLED_PAIRS)) % n  # j != i
    return float(np.median(_distance.pairs(y, i, j)))


def bandwidth(y: np.ndarray, *, seed: int = 0) -> float:
    """Default kernel bandwidth: half the median pairwise expression distance (the paper's)."""
    sigma = median_distance(y, seed=seed) / 2
    if not sigma > 0:
        raise ValueError(
            "The expression of the training spots is identical (median pairwise distance 0), "
            "so the expression kernel is undefined; check the layer, or pass `sigma=`."
        )
    return sigma


def log_kernel(distance: np.ndarray, sigma: float, kernel: Kernel) -> np.ndarray:
    """Logarithm of the kernel at Euclidean expression distance ``distance``.

    ``"gaussian"`` (the paper, eq. 5): ``K = exp(-d² / (2 σ²))``.
    ``"reference"`` (the public code, which passes the distance, not its square):
    ``K = exp(-d / (2 σ²))``.
    """
    if kernel == "gaussian":
        return -np.square(distance) / (2 * sigma**2)
    if kernel == "reference":
        return -np.asarray(distance) / (2 * sigma**2)
    raise ValueError(f"`kernel` must be one of {list(KERNELS)}, not {kernel!r}.")


def row_totals(y: np.ndarray, sigma: float, kernel: Kernel) -> np.ndarray:
    """``Σ_{j ≠ i} K(i, j)`` over all rows of ``y``, in chunks (memory ``chunk × n``).

    The public reference normalises the edge weight of the loss by this total, over all training
    spots, instead of over the candidates.
    """
    totals = np.empty(len(y))
    for start, d in _distance.blocks(y):
        k = np.exp(log_kernel(d, sigma, kernel))
        k[np.arange(len(d)), np.arange(start, start + len(d))] = 0.0
        totals[start : start + len(d)] = k.sum(axis=1)
    return totals


def dense(y: np.ndarray, sigma: float, kernel: Kernel) -> np.ndarray:
    """The kernel over all pairs of rows, diagonal zeroed, rows normalised: C-Mixup's P(j | i)."""
    out = np.empty((len(y), len(y)))
    for start, d in _distance.blocks(y):
        log_k = log_kernel(d, sigma, kernel)
        log_k[np.arange(len(d)), np.arange(start, start + len(d))] = -np.inf
        log_k -= log_k.max(axis=1, keepdims=True)
        k = np.exp(log_k)
        out[start : start + len(d)] = k / k.sum(axis=1, keepdims=True)
    return out
