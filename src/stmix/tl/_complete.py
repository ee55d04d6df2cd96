"""Completing dropout values from neighbouring spots (SEPAL's adaptive median, SpaCKLE)."""

from __future__ import annotations

import logging
from typing import Any

import anndata as ad
import numpy as np

from stmix import _anndata, _history, _owner, _validate
from stmix._docs import doc_params
from stmix._keys import COMPLETED, SPATIAL
from stmix.pp import _median, _rings
from stmix.tl import _trainer
from stmix.tl._completion import complete_with_transformer

logger = logging.getLogger(__name__)

METHODS = ("transformer", "median")
WRITER = "stmix.tl.complete"


@doc_params
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
    accelerator: str = "auto",
    devices: int | str | list[int] = 1,
    progress: bool = True,
    spatial_key: str = SPATIAL,
    library_key: str | None = None,
    copy: bool = False,
    **trainer_kwargs: Any,
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
    accelerator, devices
        Where the transformer trains (Lightning's words; default: a GPU when there is one).
    progress
        Show a progress bar over epochs.
    spatial_key
        Key of the spot centres in ``obsm`` (for ``grid="knn"``).
    library_key
        Column of ``obs`` naming each spot's section (default ``"library_id"`` when
        ``uns["spatial"]`` holds several libraries and that column exists): neighbours, medians
        and the fallback median come from the spot's own section; one transformer learns from
        all sections.
    copy
        {copy}
    **trainer_kwargs
        Passed to :class:`lightning.pytorch.Trainer` (``precision``, ``logger``, ...).

    Returns
    -------
    anndata.AnnData or None
        ``None``, or a new AnnData when ``copy=True``; either way ``layers[key_added]`` (float32,
        completed) and ``layers[f"{key_added}_missing"]`` (bool, the entries that were filled), and
        ``uns[key_added]["params"]``; for the transformer also ``uns[key_added]["history"]``
        (per epoch, from epoch 0, the untrained recalibrated median: ``val_mse`` on the held-out
        entries, ``train_total``, ``lr``, ``seconds``) and ``uns[key_added]["best_epoch"]``.
    """
    _validate.choice("method", method, METHODS)
    _validate.number("mask_prob", mask_prob, above=0, below=1)
    n_rings = _validate.integer("n_rings", n_rings)
    epochs = _validate.integer("epochs", epochs, minimum=0)
    batch_size = _validate.integer("batch_size", batch_size)
    _validate.number("lr", lr, above=0)
    d_model = _validate.integer("d_model", d_model)
    n_heads = _validate.integer("n_heads", n_heads)
    n_layers = _validate.integer("n_layers", n_layers)
    seed = _validate.integer("seed", seed, minimum=0)
    if d_model % n_heads:
        raise ValueError(
            f"`d_model` ({d_model}) must be a multiple of `n_heads` ({n_heads}): each attention "
            f"head gets d_model / n_heads dimensions."
        )
    trainer_kwargs = _trainer.check_trainer_kwargs(trainer_kwargs)
    if method == "transformer":
        _trainer.check_hardware(accelerator, devices, **trainer_kwargs)
    _owner.claim(
        adata,
        WRITER,
        key_added,
        [("layers", key_added), ("layers", f"{key_added}_missing"), ("uns", key_added)],
    )
    x = _anndata.expression(adata, layer, dtype=np.float32)
    mask = _median.missing_mask(adata, x, missing)
    key = _anndata.library_key(adata, library_key)
    sections = _anndata.libraries(adata, key)
    neighbourhoods = _rings_by_section(adata, sections, n_rings, grid, spatial_key)
    if mask.all(axis=0).any():
        gene = adata.var_names[np.flatnonzero(mask.all(axis=0))[0]]
        raise ValueError(
            f"Gene {gene!r} is missing in every spot; there is nothing to complete "
            f"it from. Drop genes that are never observed."
        )

    median, tokens = _medians(x, mask, sections, neighbourhoods, n_rings)
    completed = np.where(mask, median, x)
    history, best_epoch = None, None
    if method == "transformer":
        index, ring = _stack_tokens(tokens, adata.n_obs)
        completed, history, best_epoch = complete_with_transformer(
            x,
            mask,
            median,
            index,
            ring,
            n_rings=n_rings,
            mask_prob=mask_prob,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            d_model=d_model,
            n_heads=n_heads,
            n_layers=n_layers,
            seed=seed,
            accelerator=accelerator,
            devices=devices,
            progress=progress,
            **trainer_kwargs,
        )

    adata = adata.copy() if copy else adata
    adata.layers[key_added] = completed.astype(np.float32)
    adata.layers[f"{key_added}_missing"] = mask
    params = _params(method, n_rings, neighbourhoods, mask, layer, key)
    if method == "transformer":
        params.update(
            mask_prob=float(mask_prob),
            epochs=int(epochs),
            d_model=int(d_model),
            n_heads=int(n_heads),
            n_layers=int(n_layers),
            seed=int(seed),
        )
    adata.uns[key_added] = _owner.mark({"params": params}, WRITER)
    if history is not None:
        adata.uns[key_added]["history"] = _history.columns(history)
        adata.uns[key_added]["best_epoch"] = int(best_epoch)
    return adata if copy else None


def _rings_by_section(adata, sections: dict, n_rings: int, grid, spatial_key) -> dict:
    """Each section's rings of neighbours (medians and fallbacks stay within a section)."""
    return {
        name: _rings.rings(
            adata[spots],  # with one section, every spot in order
            max(n_rings, _median.MAX_RINGS),
            grid=grid,
            spatial_key=spatial_key,
        )
        for name, spots in sections.items()
    }


def _medians(x, mask, sections: dict, neighbourhoods: dict, n_rings: int):
    """The adaptive ring median of every spot, and the tokens of each section's spots."""
    median = np.empty_like(x)
    tokens = []
    for name, spots in sections.items():
        median[spots] = _median.adaptive_median(x[spots], mask[spots], neighbourhoods[name])
        local, ring = _median.tokens(neighbourhoods[name], n_rings)
        tokens.append((spots, np.where(local >= 0, spots[np.maximum(local, 0)], -1), ring))
    return median, tokens


def _params(method: str, n_rings: int, neighbourhoods: dict, mask, layer, key) -> dict:
    """``uns[key_added]["params"]`` shared by both methods."""
    grids = sorted({n.grid for n in neighbourhoods.values()})
    params = {
        "method": method,
        "n_rings": int(n_rings),
        "grid": "+".join(grids),  # one grid: its name
        "n_missing": int(mask.sum()),
        "share_missing": float(mask.mean()),
    }
    if layer is not None:
        params["layer"] = layer
    if key is not None:
        params["library_key"] = key
    return params


def _stack_tokens(tokens, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each section's neighbour tokens (global positions) in one (n, width) pair of arrays."""
    width = max(index.shape[1] for _, index, _ in tokens)
    index = np.full((n, width), -1, dtype=np.int64)
    ring = np.zeros((n, width), dtype=np.int64)
    for spots, section_index, section_ring in tokens:
        index[spots, : section_index.shape[1]] = section_index
        ring[spots, : section_ring.shape[1]] = section_ring
    return index, ring
