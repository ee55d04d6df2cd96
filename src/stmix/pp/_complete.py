"""Completing dropout values from neighbouring spots (SEPAL's adaptive median, SpaCKLE)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np

from stmix import _anndata
from stmix._keys import COMPLETED, SPATIAL
from stmix.pp import _rings

if TYPE_CHECKING:  # pp imports no torch; the transformer loads it when it runs
    import torch

logger = logging.getLogger(__name__)

METHODS = ("transformer", "median")
#: The adaptive median widens up to this many rings before it falls back to the gene's median.
MAX_RINGS = 8


def complete(
    adata: ad.AnnData,
    method: str = "transformer",
    *,
    layer: str | None = None,
    missing: np.ndarray | str | None = None,
    key_added: str = COMPLETED,
    n_rings: int = 2,
    mask_prob: float = 0.3,
    grid: str = "auto",
    epochs: int = 100,
    batch_size: int = 64,
    lr: float = 1e-3,
    d_model: int = 64,
    n_heads: int = 4,
    n_layers: int = 2,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    spatial_key: str = SPATIAL,
    copy: bool = False,
) -> ad.AnnData | None:
    """Fill missing expression values ("dropouts") from the spot's neighbours.

    ``method="median"`` (SEPAL's adaptive median): a missing value becomes the median of that
    gene's *observed* values among the spot's neighbours in ring 1; if none is observed there,
    rings 1-2, and so on up to 8 rings; failing that, the gene's median over all observed
    spots.

    ``method="transformer"`` (SpaCKLE): starting from the median-completed matrix, a small
    transformer encoder reads the expression of a spot and of its neighbours within ``n_rings``
    (one token per spot; each token holds the spot's expression, which entries are missing,
    and its ring). It learns, self-supervised on this very section, to reconstruct observed
    entries of the centre spot hidden at random (``mask_prob`` of them each step, and as many
    of the neighbours' entries, so it cannot recognise a spot and recall it; MSE on the hidden
    centre entries only). It predicts a correction to the adaptive median, which it first
    recalibrates gene by gene (least squares of the observed values on their median): with few
    observed neighbours the median is noisy and too extreme. 10% of the observed entries are
    never trained on; the epoch that predicts them best is kept (``epochs=0`` keeps the
    recalibrated median). It then fills the originally missing entries. Observed values are
    never changed.

    Parameters
    ----------
    adata
        Spots with log-normalised expression and coordinates.
    method
        ``"transformer"`` or ``"median"``.
    layer
        Layer to complete; ``None`` uses ``X``. ``X`` is never overwritten.
    missing
        Which entries are missing: ``None`` treats zeros as missing; or a boolean array of
        ``adata``'s shape, or the name of a layer holding one.
    key_added
        Layer for the completed matrix; the mask goes to ``f"{key_added}_missing"``.
    n_rings
        Rings of neighbours the transformer reads.
    mask_prob
        Share of the observed entries of each centre spot hidden per training step.
    grid
        ``"auto"`` (hexagonal for Visium, square for the ST array, from ``obs["array_row"]`` /
        ``obs["array_col"]``; otherwise nearest neighbours), ``"hexagonal"``, ``"square"``,
        ``"knn"``.
    epochs, batch_size, lr
        Training of the transformer (AdamW, cosine schedule).
    d_model, n_heads, n_layers
        Size of the transformer.
    seed
        Seed of the masks, batches and initialisation.
    device
        ``"auto"`` (CUDA, MPS, CPU) or a torch device.
    progress
        Show a progress bar over epochs.
    spatial_key
        Key of the spot centres in ``obsm`` (for ``grid="knn"``).
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    anndata.AnnData or None
        ``None``, or a new AnnData when ``copy=True``; either way ``layers[key_added]`` (float32,
        completed) and ``layers[f"{key_added}_missing"]`` (bool, the entries that were filled), and
        ``uns[key_added]["params"]``; for the transformer also ``uns[key_added]["history"]`` (the
        masked-entry MSE per epoch).
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}, not {method!r}.")
    if not 0 < mask_prob < 1:
        raise ValueError(f"`mask_prob` must be in (0, 1), not {mask_prob}.")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"`epochs` must be a non-negative integer, not {epochs!r}.")
    x = _anndata.expression(adata, layer, dtype=np.float32)
    mask = _missing_mask(adata, x, missing)
    neighbourhood = _rings.rings(adata, max(n_rings, MAX_RINGS), grid=grid, spatial_key=spatial_key)
    if mask.all(axis=0).any():
        gene = adata.var_names[np.flatnonzero(mask.all(axis=0))[0]]
        raise ValueError(
            f"Gene {gene!r} is missing in every spot; there is nothing to complete "
            f"it from. Drop genes that are never observed."
        )

    median = adaptive_median(x, mask, neighbourhood)
    completed = np.where(mask, median, x)
    history = None
    if method == "transformer":
        from stmix.tl._completion import complete_with_transformer

        near = (neighbourhood.ring >= 1) & (neighbourhood.ring <= n_rings)  # 0 pads
        index = np.where(near, neighbourhood.index, -1)
        keep = near.any(axis=0)
        completed, history = complete_with_transformer(
            x,
            mask,
            median,
            index[:, keep],
            np.where(near, neighbourhood.ring, 0)[:, keep],
            n_rings=n_rings,
            mask_prob=mask_prob,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            d_model=d_model,
            n_heads=n_heads,
            n_layers=n_layers,
            seed=seed,
            device=device,
            progress=progress,
        )

    adata = adata.copy() if copy else adata
    adata.layers[key_added] = completed.astype(np.float32)
    adata.layers[f"{key_added}_missing"] = mask
    params = {
        "method": method,
        "n_rings": int(n_rings),
        "grid": neighbourhood.grid,
        "n_missing": int(mask.sum()),
        "share_missing": float(mask.mean()),
    }
    if method == "transformer":
        params.update(
            mask_prob=float(mask_prob),
            epochs=int(epochs),
            d_model=int(d_model),
            n_heads=int(n_heads),
            n_layers=int(n_layers),
            seed=int(seed),
        )
    if layer is not None:
        params["layer"] = layer
    adata.uns[key_added] = {"params": params}
    if history is not None:
        adata.uns[key_added]["history"] = {"masked_mse": np.asarray(history)}
    return adata if copy else None


def _missing_mask(adata: ad.AnnData, x: np.ndarray, missing) -> np.ndarray:
    if missing is None:
        return x == 0
    if isinstance(missing, str):
        if missing not in adata.layers:
            raise KeyError(f"`missing` names adata.layers[{missing!r}], which does not exist.")
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
