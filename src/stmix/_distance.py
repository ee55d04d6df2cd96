"""Euclidean distances between expression profiles, in chunks so memory stays bounded."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: Rows per block of :func:`blocks`: a block holds ``CHUNK × n`` float64 distances.
CHUNK = 2048


def blocks(y: np.ndarray, *, chunk: int = CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    """Distances of each block of rows of ``y`` to every row: ``(start, (rows, n) array)``.

    Computed as ``sqrt(|a|² + |b|² - 2 a·b)`` (clipped at 0), in float64. The diagonal of each
    block (a row against itself) is 0 up to rounding.
    """
    y = np.asarray(y, dtype=np.float64)
    squared = np.einsum("ij,ij->i", y, y)
    for start in range(0, len(y), chunk):
        block = y[start : start + chunk]
        d2 = squared[start : start + chunk, None] + squared[None, :] - 2.0 * block @ y.T
        yield start, np.sqrt(np.maximum(d2, 0.0))


def pairs(y: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Distance between ``y[rows[k]]`` and ``y[cols[k]]`` for every k (memory O(pairs))."""
    y = np.asarray(y, dtype=np.float64)
    out = np.empty(len(rows))
    step = max(1, 2**20 // max(y.shape[1], 1))  # 8 MB of differences at a time
    for start in range(0, len(rows), step):
        stop = start + step
        diff = y[rows[start:stop]]
        diff -= y[cols[start:stop]]
        out[start:stop] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out
