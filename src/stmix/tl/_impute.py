"""Predicting every spot with a trained imputer, and reading the predictions back."""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import torch

from stmix import _anndata, _owner, _validate
from stmix._keys import PATCHES, PREDICTIONS, SPATIAL
from stmix.tl._model import Imputer

logger = logging.getLogger(__name__)
WRITER = "stmix.tl.impute"


def impute(
    adata: ad.AnnData,
    model: Imputer,
    *,
    key_added: str = PREDICTIONS,
    clip: bool = True,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    patches_key: str = PATCHES,
    progress: bool = True,
    copy: bool = False,
    layer: str | None = None,
) -> ad.AnnData | None:
    """Predict the expression of the model's genes at every spot from its H&E patch.

    Only the patches are needed: ``adata`` may hold any genes, or none at all (a section that
    was never measured, or a grid of pseudo-spots over a slide). A head trained on an embedding
    (``use_rep``) reads ``obsm[use_rep]`` when it holds the same embedding, and else computes it
    from the patches with the encoder the model records (as :func:`stmix.tl.embed` did).

    Parameters
    ----------
    adata
        Spots with ``obsm[patches_key]`` cut at the model's patch size.
    model
        A trained :class:`~stmix.tl.Imputer` (:func:`stmix.tl.fit` or :func:`stmix.tl.load`).
    key_added
        Key of the predictions in ``obsm``.
    clip
        Clip the predictions at 0: expression on the log scale cannot be negative.
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
        ``None``, or a new AnnData when ``copy=True``; either way it holds

        - ``obsm[key_added]``: a float32 DataFrame (n_obs × the model's genes) of predictions on
          the log scale of the training data. :func:`stmix.tl.evaluate` and
          :func:`stmix.pl.maps` read it by name; :func:`stmix.tl.predictions` makes an AnnData
          of it for scanpy and squidpy (``sc.pl.spatial``, ``sq.gr.spatial_autocorr``);
        - ``uns[f"{key_added}_impute"]["params"]``: the model's backbone, patch size, number of
          genes and ``clip``.
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
    batch_size = _validate.integer("batch_size", batch_size)
    _owner.claim(
        adata, WRITER, record_key(key_added), [("obsm", key_added), ("uns", record_key(key_added))]
    )
    if model.kind == "head":
        inputs = head_inputs(adata, model, patches_key, batch_size, device, progress)
    else:
        inputs = _anndata.patches(adata, patches_key, size=model.patch_size)
    stored_scale = ((adata.uns.get(patches_key) or {}).get("params") or {}).get("spot_scale")
    if stored_scale is not None and abs(stored_scale - model.config.get("spot_scale", 1.0)) > 1e-6:
        logger.warning(
            "The patches were cut with spot_scale=%s but the model was trained on "
            "spot_scale=%s: the tissue appears at another magnification.",
            stored_scale,
            model.config.get("spot_scale"),
        )

    pred = model.predict(inputs, batch_size=batch_size, device=device, progress=progress)
    if clip:
        np.maximum(pred, 0.0, out=pred)
    adata = adata.copy() if copy else adata
    adata.obsm[key_added] = pd.DataFrame(pred, index=adata.obs_names.copy(), columns=model.genes)
    adata.uns[record_key(key_added)] = _owner.mark(
        {
            "params": {
                "backbone": model.config["backbone"],
                "patch_size": model.patch_size,
                "n_genes": len(model.genes),
                "clip": bool(clip),
                "patches_key": patches_key,
            }
        },
        WRITER,
    )
    return adata if copy else None


def record_key(key_added: str) -> str:
    """``uns`` key of the record :func:`impute` writes beside ``obsm[key_added]``."""
    return f"{key_added}_impute"


def predictions(adata: ad.AnnData, key: str = PREDICTIONS) -> ad.AnnData:
    """The predictions of :func:`stmix.tl.impute` as an AnnData, for scanpy and squidpy.

    Parameters
    ----------
    adata
        Spots after :func:`stmix.tl.impute`.
    key
        Key of the predictions in ``obsm``.

    Returns
    -------
    anndata.AnnData
        ``X`` the predictions (spots × the model's genes), the spots' ``obs``, ``obsm`` (without
        the predictions and patches) and ``uns["spatial"]``, so that ``sc.pl.spatial(pred,
        color="ERBB2")`` draws a predicted map over the image.

    Examples
    --------
    >>> stmix.tl.impute(adata, model)  # doctest: +SKIP
    >>> sc.pl.spatial(stmix.tl.predictions(adata), color=["ERBB2"])  # doctest: +SKIP
    """
    frame = _anndata.predictions(adata, key)
    out = ad.AnnData(
        X=frame.to_numpy(dtype=np.float32),
        obs=adata.obs.copy(),
        var=pd.DataFrame(index=pd.Index(frame.columns.astype(str))),
    )
    patches_key = ((adata.uns.get(record_key(key)) or {}).get("params") or {}).get("patches_key")
    for name, value in adata.obsm.items():
        if name not in (key, patches_key, PATCHES) and not isinstance(value, pd.DataFrame):
            out.obsm[name] = value
    if SPATIAL in adata.uns:
        out.uns[SPATIAL] = adata.uns[SPATIAL]
    return out


def head_inputs(adata, model: Imputer, patches_key, batch_size, device, progress) -> np.ndarray:
    """The embedding a head takes: ``obsm[use_rep]`` when it is the same, else made anew."""
    from stmix.nn.encoder import Encoder
    from stmix.tl._device import resolve_device
    from stmix.tl._embed import encode, representation

    use_rep = model.config["use_rep"]
    made = model.config.get("embedding") or {}
    width = int(model.config["in_features"])
    if use_rep in adata.obsm:
        try:
            values, record = representation(adata, use_rep)
        except ValueError as error:
            logger.warning("Not using adata.obsm[%r]: %s", use_rep, error)
        else:
            same = all(record.get(k) == made.get(k) for k in ("backbone", "size", "tta"))
            if values.shape[1] == width and (same or not made):
                return values
            logger.warning(
                "adata.obsm[%r] holds another embedding than the model's (%s); making the "
                "model's from the patches.",
                use_rep,
                record.get("backbone"),
            )
    if not made.get("backbone"):
        raise KeyError(
            f"adata.obsm[{use_rep!r}] is missing, and the model does not record how its "
            f"embedding was made (it was not made by stmix.tl.embed): compute it as before and "
            f"store it in adata.obsm[{use_rep!r}]."
        )
    size = (made.get("patches") or {}).get("size")
    patches = _anndata.patches(adata, patches_key, size=size)
    encoder = Encoder(
        made["backbone"],
        pretrained=bool(made.get("pretrained")) and not made.get("weights_file"),
        weights=made.get("weights_file"),
        img_size=made.get("size"),
        backbone_kwargs=made.get("backbone_kwargs") or None,
    )
    target = resolve_device(device) if device is not None else resolve_device("auto")
    logger.info("Embedding %d spots with %s for the head.", adata.n_obs, made["backbone"])
    return encode(
        encoder,
        patches,
        size=made.get("size"),
        tta=int(made.get("tta", 1)),
        batch_size=batch_size,
        device=target,
        progress=progress,
    )
