"""Scoring predictions against measured expression."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from stmix import _anndata
from stmix._keys import METRICS, PREDICTIONS, SPLIT, metrics_uns_key
from stmix._metrics import gene_metrics, summary


def evaluate(
    adata: ad.AnnData,
    *,
    layer: str = PREDICTIONS,
    split: str | None = "test",
    truth_layer: str | None = None,
    split_key: str = SPLIT,
    key_added: str = METRICS,
) -> pd.DataFrame:
    """Per-gene MSE, MAE and Pearson correlation of predictions against the measurements.

    The genes scored are those the predictions cover (the non-NaN columns of ``layers[layer]``);
    the spots, those labelled ``split`` (``None``: all spots). The overall PCC is the mean over
    genes whose truth and prediction both vary (the paper's and the reference code's metric).

    Parameters
    ----------
    adata
        Spots with predictions (:func:`stmix.tl.impute`).
    layer
        Layer of the predictions.
    split
        ``"train"``, ``"val"``, ``"test"`` or ``None`` for every spot.
    truth_layer
        Layer of the measured expression, on the scale the model learnt; ``None`` uses ``X``.
    split_key
        Column of ``obs`` with the split.
    key_added
        Prefix of the keys written.

    Returns
    -------
    pandas.DataFrame
        DataFrame indexed by gene with columns ``mse``, ``mae``, ``pcc``. Also writes
        ``var[f"{key_added}_mse"]``, ``var[f"{key_added}_mae"]``, ``var[f"{key_added}_pcc"]`` (NaN
        for genes not scored) and ``uns[f"{key_added}_metrics"]`` (``mse``, ``mae``, ``pcc``,
        ``split``, ``layer``, ``n_spots``, ``n_genes``).
    """
    if layer not in adata.layers:
        raise KeyError(
            f"adata.layers[{layer!r}] is missing: predict first with stmix.tl.impute(adata, model)."
        )
    spots = (
        np.arange(adata.n_obs) if split is None else _anndata.split_indices(adata, split_key, split)
    )
    if len(spots) == 0:
        raise ValueError(f"No spot is labelled {split!r} in adata.obs[{split_key!r}].")
    predictions = np.asarray(adata.layers[layer], dtype=np.float32)
    genes = np.flatnonzero(~np.isnan(predictions).all(axis=0))
    if len(genes) == 0:
        raise ValueError(f"adata.layers[{layer!r}] holds no prediction (all NaN).")
    pred = predictions[np.ix_(spots, genes)]
    if not np.isfinite(pred).all():
        raise ValueError(
            f"adata.layers[{layer!r}] has NaN or infinite values among the scored "
            f"spots of predicted genes."
        )
    truth = _anndata.expression(adata, truth_layer, obs=spots, var=genes)
    _anndata.warn_if_counts(truth, truth_layer)
    metrics = gene_metrics(truth, pred)
    table = pd.DataFrame(metrics, index=adata.var_names[genes])
    overall = summary(metrics)

    for name in ("mse", "mae", "pcc"):
        column = np.full(adata.n_vars, np.nan)
        column[genes] = metrics[name]
        adata.var[f"{key_added}_{name}"] = column
    adata.uns[metrics_uns_key(key_added)] = {
        **overall,
        "split": "all" if split is None else split,
        "layer": layer,
        "truth_layer": "X" if truth_layer is None else truth_layer,
        "n_spots": len(spots),
        "n_genes": len(genes),
    }
    return table
