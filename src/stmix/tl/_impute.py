"""Predicting every spot with a trained imputer."""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import torch

from stmix import _anndata
from stmix._keys import PATCHES, PREDICTIONS
from stmix.tl._model import Imputer

logger = logging.getLogger(__name__)


def impute(
    adata: ad.AnnData,
    model: Imputer,
    *,
    key_added: str = PREDICTIONS,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    patches_key: str = PATCHES,
    progress: bool = True,
    copy: bool = False,
    layer: str | None = None,
) -> ad.AnnData | None:
    """Predict the expression of every spot from its H&E patch.

    Parameters
    ----------
    adata
        Spots with ``obsm[patches_key]`` cut at the model's patch size, and all of the model's
        genes in ``var_names`` (any order, other genes allowed).
    model
        A trained :class:`~stmix.tl.Imputer` (:func:`stmix.tl.fit` or :func:`stmix.tl.load`).
    key_added
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
    layer
        Deprecated name of ``key_added``.

    Returns
    -------
    anndata.AnnData or None
        ``None``, or a new AnnData when ``copy=True``; either way ``layers[key_added]`` holds
        float32 predictions (n_obs × n_vars), NaN in the columns of genes the model does not
        predict.
    """
    if layer is not None:
        warnings.warn(
            "stmix.tl.impute(layer=...) is now key_added=...; `layer` will be removed.",
            FutureWarning,
            stacklevel=2,
        )
        key_added = layer
    if not isinstance(model, Imputer):
        raise TypeError(f"`model` must be an stmix Imputer (stmix.tl.fit), not {type(model)}.")
    columns = adata.var_names.get_indexer(model.genes)
    missing = [g for g, c in zip(model.genes, columns, strict=True) if c < 0]
    if missing:
        raise KeyError(
            f"adata lacks {len(missing)} of the model's {len(model.genes)} genes, e.g. "
            f"{missing[:5]}; the model predicts the genes it was trained on."
        )
    patches = _anndata.patches(adata, patches_key, size=model.patch_size)
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
    adata.layers[key_added] = out
    return adata if copy else None
