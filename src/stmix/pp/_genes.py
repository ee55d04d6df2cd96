"""Choosing the genes to predict."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np

from stmix import _anndata, _owner, _validate
from stmix._deprecation import renamed
from stmix._docs import doc_params
from stmix._keys import SELECTED, SPATIAL, SPLIT
from stmix._loggers import held_back, quiet_import

logger = logging.getLogger(__name__)

METHODS = ("moran", "mean", "hvg")
WRITER = "stmix.pp.select_genes"


@doc_params
@renamed("n_neighs", "n_neighbors")
def select_genes(
    adata: ad.AnnData,
    n: int = 128,
    *,
    method: str = "moran",
    layer: str | None = None,
    spatial_key: str = SPATIAL,
    n_neighbors: int = 6,
    library_key: str | None = None,
    split: str | None = None,
    split_key: str = SPLIT,
    key_added: str = SELECTED,
    copy: bool = False,
) -> ad.AnnData | None:
    """Mark the ``n`` genes to predict.

    ``method="moran"`` ranks genes by Moran's I, the spatial autocorrelation that image
    models can hope to learn (SpaRED's choice), computed with squidpy on a
    ``n_neighbors``-nearest-neighbour graph of the spots (:func:`squidpy.gr.spatial_neighbors_knn`,
    :func:`squidpy.gr.spatial_autocorr`); ``"mean"`` by mean expression (the SNR-ST-Mix paper's
    top 250); ``"hvg"`` by scanpy's normalised dispersion (:func:`scanpy.pp.highly_variable_genes`).
    Genes that do not vary are never selected. squidpy and scanpy run on a copy: ``adata`` gets
    only the keys below. With several sections, each section is scored on its own (Moran's I
    on its own neighbour graph) and the scores are averaged, so every section counts once.

    Parameters
    ----------
    adata
        Spots with log-normalised expression (and ``obsm[spatial_key]`` for ``"moran"``).
    n
        Number of genes.
    method
        ``"moran"``, ``"mean"`` or ``"hvg"``.
    layer
        Layer with the expression; ``None`` uses ``X``.
    spatial_key
        {spatial_key}
    n_neighbors
        Neighbours per spot in the Moran graph (``n_neighs``, squidpy's name, is accepted
        for one version with a FutureWarning).
    library_key
        {library_key}
    split
        Score the genes on the spots labelled ``split`` in ``obs[split_key]`` only
        (``"train"``: chosen without looking at the spots a model is tested on, as the
        benchmarks do); ``None`` scores every spot.
    split_key
        Column of ``obs`` with the split (:func:`stmix.pp.split`).
    key_added
        Column of ``var`` to write.
    copy
        {copy}

    Returns
    -------
    anndata.AnnData or None
        ``None``, or a new AnnData when ``copy=True``; either way it holds ``var[key_added]``
        (bool, the selected genes), ``var[f"{key_added}_score"]`` (Moran's I, mean or normalised
        dispersion) and ``uns[key_added]["params"]``.
    """
    _validate.choice("method", method, METHODS)
    n = _validate.integer("n", n)
    n_neighbors = _validate.integer("n_neighbors", n_neighbors)
    _owner.claim(
        adata,
        WRITER,
        key_added,
        [("var", key_added), ("var", f"{key_added}_score"), ("uns", key_added)],
    )
    spots_used = _anndata.labelled(adata, split_key, split)
    x = _anndata.expression(adata, layer, obs=spots_used)
    varies = x.std(axis=0) > 0
    if varies.sum() < n:
        raise ValueError(
            f"Only {int(varies.sum())} genes vary across the spots; cannot select {n}."
        )
    key = _anndata.library_key(adata, library_key)
    coords = _anndata.spatial_coordinates(adata, spatial_key) if method == "moran" else None
    coords = None if coords is None else coords[spots_used]
    scores = []
    for spots in _anndata.libraries(adata[spots_used], key).values():
        here = x[spots]
        varies_here = varies & (here.std(axis=0) > 0)
        score = np.full(adata.n_vars, np.nan)  # constant genes have no score
        if method == "moran":
            score[varies_here] = _moran(here[:, varies_here], coords[spots], n_neighbors)
        elif method == "mean":
            score = here.mean(axis=0).astype(np.float64)
        else:
            score[varies_here] = _dispersion(here[:, varies_here])
        scores.append(score)
    score = _mean_of_scored(np.vstack(scores))
    score = np.where(varies & np.isfinite(score), score, np.nan)
    order = np.argsort(np.where(np.isnan(score), -np.inf, score))[::-1][:n]
    selected = np.zeros(adata.n_vars, dtype=bool)
    selected[order] = True

    adata = adata.copy() if copy else adata
    adata.var[key_added] = selected
    adata.var[f"{key_added}_score"] = score
    params = {"n": int(n), "method": method, "n_neighbors": int(n_neighbors)}
    if key is not None:
        params["library_key"] = key
    if layer is not None:
        params["layer"] = layer
    if split is not None:
        params.update(split=split, split_key=split_key)
    adata.uns[key_added] = _owner.mark({"params": params}, WRITER)
    return adata if copy else None


def _mean_of_scored(scores: np.ndarray) -> np.ndarray:
    """Per gene, the mean over the sections that scored it; NaN where none did."""
    scored = np.isfinite(scores)
    total = np.where(scored, scores, 0.0).sum(axis=0)
    count = scored.sum(axis=0)
    return np.divide(total, count, out=np.full(scores.shape[1], np.nan), where=count > 0)


#: The logger squidpy's graph building reports through: one INFO line per call, so one per
#: section here, which says nothing a user of ``select_genes`` needs.
_SQUIDPY_LOGGER = "spatialdata._logging"


def _moran(x: np.ndarray, coords: np.ndarray, n_neighs: int) -> np.ndarray:
    sq = quiet_import("squidpy")

    work = ad.AnnData(x)
    work.obsm["spatial"] = coords
    genes = list(work.var_names)
    with held_back(_SQUIDPY_LOGGER):
        sq.gr.spatial_neighbors_knn(work, n_neighs=n_neighs)
        sq.gr.spatial_autocorr(
            work, mode="moran", genes=genes, n_perms=None, show_progress_bar=False
        )
    table = work.uns["moranI"]
    return table["I"].reindex(genes).to_numpy(dtype=np.float64)


def _dispersion(x: np.ndarray) -> np.ndarray:
    import scanpy as sc

    work = ad.AnnData(x)
    sc.pp.highly_variable_genes(work, flavor="seurat")
    return work.var["dispersions_norm"].to_numpy(dtype=np.float64)
