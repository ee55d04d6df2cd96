"""Predicting every spot with a trained imputer."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import torch

from stmix._keys import MODEL, PATCHES
from stmix.tl._model import Imputer

logger = logging.getLogger(__name__)


def impute(
    adata: ad.AnnData,
    model: Imputer,
    *,
    layer: str = MODEL,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    patches_key: str = PATCHES,
    progress: bool = True,
    copy: bool = False,
) -> ad.AnnData | None:
    """Predict the expression of every spot from its H&E patch.

    Parameters
    ----------
    adata
        Spots with ``obsm[patches_key]`` cut at the model's patch size, and all of the model's
        genes in ``var_names`` (any order, other genes allowed).
    model
        A trained :class:`~stmix.tl.Imputer` (:func:`stmix.tl.fit` or :func:`stmix.tl.load`).
    layer
        Layer to write.
    batch_size
        Patches per forward pass.
    device
        Where to compute; default where the model is.
    patches_key
        Key of the patches in ``obsm``.
    progress
        Show a progress bar.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    anndata.AnnData or None
        ``None``, or a new AnnData when ``copy=True``; either way ``layers[layer]`` holds float32
        predictions (n_obs × n_vars), NaN in the columns of genes the model does not predict.
    """
    if not isinstance(model, Imputer):
        raise TypeError(f"`model` must be an stmix Imputer (stmix.tl.fit), not {type(model)}.")
    columns = adata.var_names.get_indexer(model.genes)
    missing = [g for g, c in zip(model.genes, columns, strict=True) if c < 0]
    if missing:
        raise KeyError(
            f"adata lacks {len(missing)} of the model's {len(model.genes)} genes, e.g. "
            f"{missing[:5]}; the model predicts the genes it was trained on."
        )
    if patches_key not in adata.obsm:
        raise KeyError(
            f"adata.obsm[{patches_key!r}] is missing: cut the patches with "
            f"stmix.pp.patches(adata, size={model.patch_size})."
        )
    patches = np.asarray(adata.obsm[patches_key])
    if patches.ndim != 4 or patches.shape[1:] != (model.patch_size, model.patch_size, 3):
        raise ValueError(
            f"adata.obsm[{patches_key!r}] holds patches of shape {patches.shape[1:]}, but the "
            f"model takes {model.patch_size} × {model.patch_size} RGB patches: run "
            f"stmix.pp.patches(adata, size={model.patch_size})."
        )
    stored_scale = ((adata.uns.get(patches_key) or {}).get("params") or {}).get("spot_scale")
    if stored_scale is not None and abs(stored_scale - model.config.get("spot_scale", 1.0)) > 1e-6:
        logger.warning(
            "The patches were cut with spot_scale=%s but the model was trained on "
            "spot_scale=%s: the tissue appears at another magnification.",
            stored_scale,
            model.config.get("spot_scale"),
        )

    pred = model.predict(patches, batch_size=batch_size, device=device, progress=progress)
    out = np.full(adata.shape, np.nan, dtype=np.float32)
    out[:, columns] = pred
    adata = adata.copy() if copy else adata
    adata.layers[layer] = out
    return adata if copy else None
