"""Predicting every spot with a trained imputer, and reading the predictions back."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import torch

from stmix import _anndata, _options, _owner, _predictions, _validate
from stmix._docs import doc_params
from stmix._keys import PATCHES, PREDICTIONS, SPATIAL, impute_uns_key, predicted_key
from stmix.errors import InputTypeError, MissingKeyError
from stmix.tl import _context, _intervals
from stmix.tl._model import Imputer

logger = logging.getLogger(__name__)
WRITER = "stmix.tl.impute"


@doc_params
def impute(
    adata: ad.AnnData,
    model: Imputer,
    *,
    key_added: str = PREDICTIONS,
    interval: float | None = None,
    clip: bool = True,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    patches_key: str = PATCHES,
    progress: bool = True,
    copy: bool = False,
) -> ad.AnnData | None:
    """Predict the model's genes at every spot from its H&E patch, into a layer.

    The predictions go where scanpy and squidpy look: ``layers[key_added]``, over the genes of
    ``adata.var`` that the model predicts, so that ``sc.pl.spatial(adata, color="ERBB2",
    layer="stmix")`` or ``sq.gr.spatial_autocorr(adata, layer="stmix", genes=...)`` read them
    directly. Model genes that ``adata`` does not hold are named in one log line; for a section
    or slide without the model's genes (a grid from :func:`stmix.pp.tile`),
    :func:`stmix.tl.predict` returns an AnnData of the predictions instead.

    A head trained on an embedding (``use_rep``) reads ``obsm[use_rep]`` when it holds the same
    embedding, and else computes it from the patches with the encoder the model records (as
    :func:`stmix.tl.embed` did).

    Parameters
    ----------
    adata
        Spots with ``obsm[patches_key]`` cut at the model's patch size.
    model
        A trained :class:`~stmix.tl.Imputer` (:func:`stmix.tl.fit` or :func:`stmix.tl.load`).
    key_added
        Key of the predictions' layer (and prefix of the ``var`` column and record).
    interval
        Also write, at this coverage level (0.9: 90%), each prediction's spread, its bounds and
        a flag of tissue unlike the training data (see "Returns"). The bounds are calibrated on
        the model's validation spots (split conformal): spots exchangeable with those (the same
        sections) fall inside at least that often per gene; on other sections, patients or
        stains the coverage is whatever it is (``tl.evaluate`` measures it). Costs one pass
        over the spots, as the predictions alone do. ``None``: predictions only.
    clip
        Clip the predictions at 0: expression on the log scale cannot be negative.
    batch_size
        Patches per forward pass.
    device
        Where to compute: ``"auto"`` (CUDA, MPS, else the CPU) or a torch device.
    patches_key
        Key of the patches in ``obsm``.
    progress
        {progress}
    copy
        {copy}

    Returns
    -------
    anndata.AnnData or None
        ``None``, or a new AnnData when ``copy=True``; either way it holds

        - ``layers[key_added]``: float32 predictions on the log scale of the training data for
          the genes marked in ``var[f"{key_added}_predicted"]``, nothing (zeros) for the other
          genes. Dense when the model predicts at least half of ``var``, else a CSR matrix that
          stores only the predicted columns, so the ``.h5ad`` grows by about the predictions'
          size. :func:`stmix.tl.evaluate` and :func:`stmix.pl.maps` read it by ``key``;
        - ``var[f"{key_added}_predicted"]``: bool, the genes predicted;
        - ``uns[f"{key_added}_impute"]``: the model's backbone, patch size, genes, ``clip`` and
          ``interval``;
        - with ``interval``: ``layers[f"{key_added}_std"]`` (the spread: what the network's
          dropout implies, or the ridge's predictive spread), ``layers[f"{key_added}_lower"]``
          and ``layers[f"{key_added}_upper"]`` (the bounds), in the predictions' layout, and
          ``obs[f"{key_added}_ood"]``: 0-1, the share of validation spots that are more like
          the training spots than this one (1: unlike any tissue the model learned from).
    """
    if not isinstance(model, Imputer):
        raise InputTypeError(
            f"{_options.name('model')} must be an stmix Imputer (stmix.tl.fit), not {type(model)}."
        )
    batch_size = _validate.integer("batch_size", batch_size)
    _anndata.check_unique_genes(adata)
    columns = adata.var_names.get_indexer(model.genes)
    present = columns >= 0
    if not present.any():
        raise ValueError(
            f"adata.var_names holds none of the model's {len(model.genes)} genes (e.g. "
            f"{model.genes[:3]}), so there is no column to write them into: "
            f"stmix.tl.predict(adata, model) returns a new AnnData of the predictions."
        )
    _owner.check_name(key_added)
    record = impute_uns_key(key_added)
    level = _intervals.check(model, interval)
    _owner.claim(
        adata,
        WRITER,
        record,
        [("layers", key_added), ("var", predicted_key(key_added)), ("uns", record)]
        + (_intervals.targets(key_added) if level else []),
    )
    pred, trust = _predict(adata, model, clip, batch_size, device, patches_key, progress, level)
    if clip:
        _warn_if_negative(adata, model, columns[present])
    if not present.all():
        missing = [g for g, here in zip(model.genes, present, strict=True) if not here]
        logger.warning(
            "%d of the model's %d genes are not in adata.var_names and are not written "
            "(e.g. %s); stmix.tl.predict(adata, model) returns all of them.",
            len(missing),
            len(model.genes),
            missing[:5],
        )
    genes = [g for g, here in zip(model.genes, present, strict=True) if here]
    adata = adata.copy() if copy else adata
    adata.layers[key_added] = _predictions.layer(pred[:, present], columns[present], adata.n_vars)
    flag = np.zeros(adata.n_vars, dtype=bool)
    flag[columns[present]] = True
    adata.var[predicted_key(key_added)] = flag
    if trust is not None:
        _intervals.write(adata, trust, key_added, present, columns[present])
    if isinstance(adata.obsm.get(key_added), pd.DataFrame):
        del adata.obsm[key_added]  # the DataFrame an earlier version of this step wrote
    adata.uns[record] = _record(model, clip, patches_key, genes, key_added, trust)
    return adata if copy else None


def predict(
    adata: ad.AnnData,
    model: Imputer,
    *,
    key_added: str = PREDICTIONS,
    interval: float | None = None,
    clip: bool = True,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    patches_key: str = PATCHES,
    keep_patches: bool = False,
    progress: bool = True,
) -> ad.AnnData:
    """A new AnnData of the model's predictions at every spot: its genes, in ``X``.

    For spots that do not measure the model's genes: a grid of pseudo-spots from
    :func:`stmix.pp.tile`, a section that was never sequenced, or one measured with another
    panel. ``adata`` is left as it was.

    Parameters
    ----------
    adata
        Spots with ``obsm[patches_key]`` cut at the model's patch size (their genes, if any,
        are not used).
    model
        A trained :class:`~stmix.tl.Imputer`.
    key_added
        Prefix of the ``var`` column and of the record in the new AnnData.
    interval, clip, batch_size, device, patches_key, progress
        As for :func:`stmix.tl.impute`; with ``interval`` the new AnnData holds
        ``layers[f"{key_added}_std"]``, ``layers[f"{key_added}_lower"]``,
        ``layers[f"{key_added}_upper"]`` and ``obs[f"{key_added}_ood"]``.
    keep_patches
        Keep ``obsm[patches_key]`` in the new AnnData (it is often most of its size).

    Returns
    -------
    anndata.AnnData
        ``X`` float32 predictions (spots × the model's genes, in its order), ``var`` the model's
        genes (``var[f"{key_added}_predicted"]`` all true), the spots' ``obs``, their ``obsm``
        (``spatial`` among them; the patches only with ``keep_patches``), ``uns["spatial"]``
        and the record ``uns[f"{key_added}_impute"]``. ``sc.pl.spatial(pred, color="ERBB2")``
        draws a predicted map over the image; :func:`stmix.pl.maps` finds the predictions by
        ``key``.

    Examples
    --------
    >>> grid = stmix.pp.tile("slide.jpg", spot_diameter=100, spacing=100, mpp=0.5)  # doctest: +SKIP
    >>> stmix.pp.patches(grid, size=model.patch_size)  # doctest: +SKIP
    >>> pred = stmix.tl.predict(grid, model)  # doctest: +SKIP
    >>> sc.pl.spatial(pred, color="ERBB2")  # doctest: +SKIP
    """
    if not isinstance(model, Imputer):
        raise InputTypeError(
            f"{_options.name('model')} must be an stmix Imputer (stmix.tl.fit), not {type(model)}."
        )
    batch_size = _validate.integer("batch_size", batch_size)
    _owner.check_name(key_added)
    level = _intervals.check(model, interval)
    pred, trust = _predict(adata, model, clip, batch_size, device, patches_key, progress, level)
    frame = pd.DataFrame(pred, index=adata.obs_names.copy(), columns=model.genes)
    out = _as_anndata(adata, frame, key_added, keep_patches, patches_key)
    if trust is not None:
        _intervals.write(out, trust, key_added, slice(None), None)
    out.uns[impute_uns_key(key_added)] = _record(
        model, clip, patches_key, list(model.genes), None, trust
    )
    return out


def predictions(adata: ad.AnnData, key: str = PREDICTIONS) -> ad.AnnData:
    """The predictions of :func:`stmix.tl.impute` as an AnnData of the predicted genes.

    Parameters
    ----------
    adata
        Spots after :func:`stmix.tl.impute`.
    key
        Key of the predictions (``layers[key]``).

    Returns
    -------
    anndata.AnnData
        As :func:`stmix.tl.predict` returns it: ``X`` the predictions (spots × predicted genes),
        the spots' ``obs``, ``obsm`` (without the patches) and ``uns["spatial"]``.
    """
    frame = _predictions.read(adata, key)
    patches_key = (_predictions.record(adata, key).get("params") or {}).get("patches_key")
    out = _as_anndata(adata, frame, key, False, patches_key or PATCHES)
    found = _predictions.record(adata, key)
    if found:
        params = {**(found.get("params") or {}), "layer": None, "genes": list(frame.columns)}
        out.uns[impute_uns_key(key)] = {**found, "params": params}
    return out


def _predict(adata, model, clip, batch_size, device, patches_key, progress, level=None):
    """Float32 (n_obs, the model's genes) predictions, checked finite, and their trust."""
    if model.kind == "head":
        inputs = head_inputs(adata, model, patches_key, batch_size, device, progress)
    else:
        inputs = _anndata.patches(adata, patches_key, size=model.patch_size)
        if len(model.config.scales) > 1:  # the wider fields of view, cut as in training
            inputs = _context.stacked(adata, patches_key, model.config.scales, inputs)
    _warn_if_other_scale(adata, model, patches_key)
    _warn_if_other_stain(adata, model, patches_key)
    trust = None
    if level is None:
        pred = model.predict(inputs, batch_size=batch_size, device=device, progress=progress)
    else:
        trust = _intervals.compute(
            model,
            inputs,
            level,
            clip=clip,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
        pred = trust.pred
    if not np.isfinite(pred).all():
        bad = int((~np.isfinite(pred)).any(axis=1).sum())
        raise ValueError(
            f"The model predicts NaN or infinite values for {bad} of {len(pred)} spots: its "
            f"weights are damaged or its training diverged; train it again."
        )
    if clip:
        np.maximum(pred, 0.0, out=pred)
    return pred, trust


def _warn_if_other_stain(adata: ad.AnnData, model: Imputer, patches_key: str) -> None:
    """The model's patches were stain-normalised and these not (or to another target)."""
    wanted = (model.config.stain or {}).get("target")
    stain = ((adata.uns.get(patches_key) or {}).get("params") or {}).get("stain") or {}
    if wanted is not None and stain.get("target") != wanted:
        logger.warning(
            "The model was trained on stain-normalised patches and these are %s: call "
            "stmix.pp.normalize_stain(adata, target=model.config.stain['target'], "
            "method=model.config.stain['method']) first.",
            "normalised to another target" if stain else "not normalised",
        )


def _warn_if_other_scale(adata: ad.AnnData, model: Imputer, patches_key: str) -> None:
    stored_scale = ((adata.uns.get(patches_key) or {}).get("params") or {}).get("spot_scale")
    if stored_scale is not None and abs(stored_scale - model.config.spot_scale) > 1e-6:
        logger.warning(
            "The patches were cut with spot_scale=%s but the model was trained on "
            "spot_scale=%s: the tissue appears at another magnification.",
            stored_scale,
            model.config.spot_scale,
        )


def _warn_if_negative(adata: ad.AnnData, model: Imputer, columns: np.ndarray) -> None:
    """``clip=True`` on expression that is negative (scaled, centred) hides real values."""
    layer = model.config.layer
    matrix = adata.X if layer is None else adata.layers.get(layer)
    if matrix is None:
        return
    values = matrix[:, columns]
    values = values.toarray() if hasattr(values, "toarray") else np.asarray(values)
    share = float(np.mean(values < 0)) if values.size else 0.0
    if share > 0.01:
        where = "X" if layer is None else f"layers[{layer!r}]"
        logger.warning(
            "%.0f%% of the measured values of the model's genes in %s are negative (scaled or "
            "centred expression?), but clip=True sets every negative prediction to 0: pass "
            "clip=False.",
            100 * share,
            where,
        )


def _record(model: Imputer, clip: bool, patches_key: str, genes: list[str], layer, trust) -> dict:
    params = {
        "backbone": model.config.backbone,
        "patch_size": model.patch_size,
        "n_genes": len(model.genes),
        "genes": list(genes),
        "clip": bool(clip),
        "patches_key": patches_key,
        "layer": layer,
        **_intervals.record(trust, model),
    }
    return _owner.mark({"params": params}, WRITER)


def _as_anndata(adata, frame: pd.DataFrame, key: str, keep_patches, patches_key) -> ad.AnnData:
    """``frame`` as ``X`` of a new AnnData with the spots' annotations and images."""
    out = ad.AnnData(
        X=frame.to_numpy(dtype=np.float32),
        obs=adata.obs.copy(),
        var=pd.DataFrame(index=pd.Index(frame.columns.astype(str))),
    )
    out.var[predicted_key(key)] = True
    for name, value in adata.obsm.items():
        if isinstance(value, pd.DataFrame) and _predictions.exists(adata, name):
            continue  # predictions of an earlier version
        if name in (patches_key, PATCHES) and not keep_patches:
            continue
        out.obsm[name] = value
    if SPATIAL in adata.uns:
        out.uns[SPATIAL] = adata.uns[SPATIAL]
    return out


def head_inputs(adata, model: Imputer, patches_key, batch_size, device, progress) -> np.ndarray:
    """The embedding a head takes: ``obsm[use_rep]`` when it is the same, else made anew."""
    from stmix.tl._embed import embed, representation

    use_rep = model.config.use_rep
    made = model.config.embedding
    width = int(model.config.in_features)
    if use_rep in adata.obsm:
        try:
            values, record = representation(adata, use_rep)
        except ValueError as error:
            logger.warning("Not using adata.obsm[%r]: %s", use_rep, error)
        else:
            keys = ("backbone", "size", "tta", "scales", "neighbors", "stain")
            same = all(record.get(k) == made.get(k) for k in keys)
            if values.shape[1] == width and (same or not made):
                return values
            logger.warning(
                "adata.obsm[%r] holds another embedding than the model's (%s); making the "
                "model's from the patches.",
                use_rep,
                record.get("backbone"),
            )
    if not made.get("backbone"):
        raise MissingKeyError(
            f"adata.obsm[{use_rep!r}] is missing, and the model does not record how its "
            f"embedding was made (it was not made by stmix.tl.embed): compute it as before and "
            f"store it in adata.obsm[{use_rep!r}]."
        )
    size = (made.get("patches") or {}).get("size")
    spots = ad.AnnData(
        obs=adata.obs.copy(),
        uns={k: adata.uns[k] for k in (SPATIAL, patches_key) if k in adata.uns},
    )
    spots.obsm[SPATIAL] = adata.obsm[SPATIAL] if SPATIAL in adata.obsm else None
    spots.obsm[patches_key] = _anndata.patches(adata, patches_key, size=size)
    logger.info("Embedding %d spots with %s for the head.", adata.n_obs, made["backbone"])
    embed(
        spots,
        backbone=made["backbone"],
        weights=made.get("weights_file"),
        pretrained=bool(made.get("pretrained")) and not made.get("weights_file"),
        backbone_kwargs=made.get("backbone_kwargs") or None,
        size=made.get("size"),
        tta=int(made.get("tta", 1)),
        scales=made.get("scales") or (1,),
        neighbors=int(made.get("neighbors") or 0),
        stain=made.get("stain"),
        batch_size=batch_size,
        device=device,
        patches_key=patches_key,
        key_added="embedding",
        progress=progress,
    )
    return spots.obsm["embedding"]
