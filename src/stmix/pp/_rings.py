"""Rings of neighbouring spots on hexagonal (Visium), square (ST) or irregular layouts."""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
from scipy.spatial import cKDTree

from stmix import _anndata, _validate
from stmix._keys import SPATIAL
from stmix.errors import MissingKeyError

GRIDS = ("auto", "hexagonal", "square", "knn")


@dataclass
class Rings:
    """Each spot's neighbours within ``n_rings``, nearest rings first.

    ``index`` (n, k) holds neighbour positions (-1 pads), ``ring`` (n, k) their ring, 1 to
    ``n_rings`` (0 pads).
    """

    index: np.ndarray
    ring: np.ndarray
    grid: str


def detect_grid(adata: ad.AnnData) -> str:
    """The array layout, from ``obs["array_row"]`` / ``obs["array_col"]``.

    ``hexagonal`` for Visium arrays (row + col always even or always odd), ``square`` for the ST
    array; ``knn`` when there are no array coordinates.
    """
    if {"array_row", "array_col"} <= set(adata.obs.columns):
        parity = (adata.obs["array_row"].to_numpy() + adata.obs["array_col"].to_numpy()) % 2
        return "hexagonal" if len(np.unique(parity)) == 1 else "square"
    return "knn"


def rings(
    adata: ad.AnnData, n_rings: int, *, grid: str = "auto", spatial_key: str = SPATIAL
) -> Rings:
    """Neighbours of every spot within ``n_rings`` rings.

    ``hexagonal``: hexagonal distance on the Visium array (6 spots in ring 1, 12 in ring 2);
    ``square``: Chebyshev distance on the ST array (8, then 16); ``knn``: for irregular layouts,
    ring r holds the spots ranked ``3 (r - 1) r + 1`` to ``3 r (r + 1)`` by distance in
    ``obsm[spatial_key]`` (as many as a hexagonal ring).
    """
    _validate.choice("grid", grid, GRIDS)
    n_rings = _validate.integer("n_rings", n_rings)
    grid = detect_grid(adata) if grid == "auto" else grid
    if grid == "knn":
        coords = _anndata.spatial_coordinates(adata, spatial_key)
        return _knn_rings(coords, n_rings)
    if not {"array_row", "array_col"} <= set(adata.obs.columns):
        raise MissingKeyError(f"grid={grid!r} needs obs['array_row'] and obs['array_col'].")
    row = adata.obs["array_row"].to_numpy(dtype=float)
    col = adata.obs["array_col"].to_numpy(dtype=float)
    if grid == "hexagonal":  # Visium doubled coordinates -> cube coordinates
        q = (col - row) / 2
        points = np.c_[q, row, -q - row]
    else:
        points = np.c_[row, col]
    return _grid_rings(points, n_rings, grid)


def _grid_rings(points: np.ndarray, n_rings: int, grid: str) -> Rings:
    tree = cKDTree(points)
    pairs = tree.query_pairs(n_rings + 1e-6, p=np.inf, output_type="ndarray")
    n = len(points)
    if len(pairs) == 0:
        return Rings(np.full((n, 0), -1), np.zeros((n, 0), int), grid)
    distance = np.round(np.abs(points[pairs[:, 0]] - points[pairs[:, 1]]).max(axis=1)).astype(int)
    src = np.r_[pairs[:, 0], pairs[:, 1]]
    dst = np.r_[pairs[:, 1], pairs[:, 0]]
    ring = np.r_[distance, distance]
    order = np.lexsort((dst, ring, src))
    src, dst, ring = src[order], dst[order], ring[order]
    counts = np.bincount(src, minlength=n)
    width = counts.max()
    slot = np.arange(len(src)) - np.repeat(np.cumsum(counts) - counts, counts)
    index = np.full((n, width), -1)
    rings = np.zeros((n, width), dtype=int)
    index[src, slot] = dst
    rings[src, slot] = ring
    return Rings(index, rings, grid)


def _knn_rings(coords: np.ndarray, n_rings: int) -> Rings:
    n = len(coords)
    k = min(3 * n_rings * (n_rings + 1), n - 1)
    if k < 1:
        return Rings(np.full((n, 0), -1), np.zeros((n, 0), int), "knn")
    _, index = cKDTree(coords).query(coords, k=k + 1)
    index = index[:, 1:]
    rank = np.arange(1, k + 1)
    # ring r holds ranks 3(r-1)r+1 .. 3r(r+1)
    ring = np.ceil((-3 + np.sqrt(9 + 12 * rank)) / 6).astype(int)
    return Rings(index, np.broadcast_to(ring, index.shape).copy(), "knn")
