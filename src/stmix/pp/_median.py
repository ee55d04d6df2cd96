"""The adaptive median of SEPAL: a missing value from the nearest ring of spots that has one.

NumPy only: :func:`stmix.tl.complete` uses it as a method of its own and as the baseline the
transformer corrects.
"""

from __future__ import annotations

import anndata as ad
import numpy as np

from stmix.errors import MissingKeyError
from stmix.pp import _rings

#: The adaptive median widens up to this many rings before it falls back to the gene's median.
MAX_RINGS = 8


def missing_mask(adata: ad.AnnData, x: np.ndarray, missing) -> np.ndarray:
    """Which entries are missing: zeros (``None``), a boolean array, or a layer holding one."""
    if missing is None:
        return x == 0
    if isinstance(missing, str):
        if missing not in adata.layers:
            raise MissingKeyError(
                f"`missing` names adata.layers[{missing!r}], which does not exist."
            )
        missing = adata.layers[missing]
        missing = missing.toarray() if hasattr(missing, "toarray") else missing
    mask = np.asarray(missing)
    if mask.shape != x.shape:
        raise ValueError(f"`missing` must have adata's shape {x.shape}, not {mask.shape}.")
    if mask.dtype != bool:
        if not np.isin(np.unique(mask), (0, 1)).all():
            raise ValueError("`missing` must be boolean (True where a value is missing).")
        mask = mask.astype(bool)
    return mask


def adaptive_median(x: np.ndarray, mask: np.ndarray, rings: _rings.Rings) -> np.ndarray:
    """For every entry, the median of the gene's observed values in the nearest ring with one.

    Rings widen up to ``rings``' width; failing that, the median over all observed spots.

    Computed for *every* entry, not only missing ones: for an observed entry it is what the
    median method would have filled had the entry been missing (the transformer's baseline).
    """
    observed = np.where(mask, np.nan, x).astype(np.float64)
    fallback = np.nanmedian(observed, axis=0)
    out = np.broadcast_to(fallback, x.shape).copy()
    todo = np.ones(x.shape, dtype=bool)
    max_ring = int(rings.ring.max(initial=0))
    for r in range(1, max_ring + 1):
        if not todo.any():
            break
        for spot in np.flatnonzero(todo.any(axis=1)):
            neighbours = rings.index[spot][(rings.ring[spot] <= r) & (rings.index[spot] >= 0)]
            if len(neighbours) == 0:
                continue
            values = observed[neighbours]
            found = ~np.isnan(values).all(axis=0) & todo[spot]
            if found.any():
                out[spot, found] = np.nanmedian(values[:, found], axis=0)
                todo[spot, found] = False
    return out.astype(np.float32)


def tokens(rings: _rings.Rings, n_rings: int) -> tuple[np.ndarray, np.ndarray]:
    """The neighbours a spot's transformer reads: every spot in rings 1 to ``n_rings``.

    Returns the neighbour index (n, k; -1 pads) and ring (0 pads) arrays, without columns that
    are padding for every spot.
    """
    near = (rings.ring >= 1) & (rings.ring <= n_rings)
    keep = near.any(axis=0)
    index = np.where(near, rings.index, -1)[:, keep]
    ring = np.where(near, rings.ring, 0)[:, keep]
    return index, ring
