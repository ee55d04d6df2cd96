"""Scoring predictions against measured expression, as the field reports it."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from stmix import _anndata, _deprecation, _metrics, _options, _owner, _predictions
from stmix._deprecation import UNSET
from stmix._docs import doc_params
from stmix._keys import (
    METRICS,
    PREDICTIONS,
    SPLIT,
    metrics_uns_key,
    predicted_key,
    spread_layer_key,
)

WRITER = "stmix.tl.evaluate"


@doc_params
def evaluate(
    adata: ad.AnnData,
    *,
    key: str = PREDICTIONS,
    layer: str | None = None,
    split: str | None = "test",
    library_key: str | None = None,
    split_key: str = SPLIT,
    key_added: str = METRICS,
    truth_layer: str | None = UNSET,
) -> pd.DataFrame:
    """Per-gene MSE, MAE and Pearson correlation of predictions against the measurements.

    The genes scored are the predicted genes that ``adata`` measures; the spots, those labelled
    ``split`` (``None``: all spots). The summary follows the image-to-expression literature:
    ``pcc``, the mean over genes of the Pearson correlation across spots (the primary number;
    genes constant in the truth are skipped and counted in ``n_skipped``, as published code
    does), ``pcc_heg``, the same over the 50 genes with the highest measured mean ("highly
    expressed genes"), and ``mse``, ``mae`` over all entries. With several sections, each
    section is also scored on its own (the leave-one-section-out number is the held-out
    section's ``pcc``).

    Parameters
    ----------
    adata
        Spots with predictions (:func:`stmix.tl.impute`) and measured expression.
    key
        Key of the predictions: ``layers[key]`` as :func:`stmix.tl.impute` writes it (or a
        layer of predictions made elsewhere, over the genes of ``var``).
    layer
        Layer of the measured expression, on the scale the model learnt; ``None`` uses ``X``.
    split
        ``"train"``, ``"val"``, ``"test"`` or ``None`` for every spot.
    library_key
        {library_key}
    split_key
        Column of ``obs`` with the split.
    key_added
        Prefix of the keys written.
    truth_layer
        Deprecated name of ``layer`` (with it, ``layer`` keeps its old meaning, ``key``).

    Returns
    -------
    pandas.DataFrame
        Indexed by gene, with columns ``mse``, ``mae``, ``pcc`` over all scored spots (and, for
        predictions with bounds from ``tl.impute(..., interval=)``, ``coverage``: the share of
        spots inside them, ``width``: their mean width); with
        several sections, one row per gene and section, with a ``library_id`` column. Also
        writes ``var[f"{key_added}_mse"]``, ``var[f"{key_added}_mae"]``,
        ``var[f"{key_added}_pcc"]`` (NaN for genes not scored) and ``uns[f"{key_added}_metrics"]``
        (``mse``, ``mae``, ``pcc``, ``pcc_heg``, ``n_genes``, ``n_skipped``, ``n_spots``,
        ``split``, ``key``, ``layer``; with bounds also ``coverage``, ``width`` and the
        ``interval`` asked for, and ``var[f"{key_added}_coverage"]``, ``var[f"{key_added}_width"]``;
        with several sections the same per section under ``by_library``).
    """
    _owner.check_name(key_added)
    key, layer = _renamed_arguments(adata, key, layer, truth_layer)
    if _predictions.in_x(adata, key) and layer is None:
        raise ValueError(
            f"X holds the predictions under {key!r} (an AnnData of stmix.tl.predict), so there "
            f"is no measurement to score them against; score the spots' own AnnData after "
            f"stmix.tl.impute, or name the measured expression with {_options.arg('layer')}."
        )
    record_key = metrics_uns_key(key_added)
    names = ("mse", "mae", "pcc") + (INTERVAL_METRICS if _has_bounds(adata, key) else ())
    _owner.claim(
        adata,
        WRITER,
        record_key,
        [*(("var", f"{key_added}_{m}") for m in names), ("uns", record_key)],
    )
    frame = _predictions.read(adata, key)
    spots = _anndata.labelled(adata, split_key, split)
    measured = [g for g in frame.columns if g in adata.var_names]
    if not measured:
        raise ValueError(
            f"None of the {frame.shape[1]} predicted genes is in adata.var_names: there is no "
            f"measurement to score them against."
        )
    genes = adata.var_names.get_indexer(measured)
    pred = frame[measured].to_numpy(dtype=np.float64)[spots]
    if not np.isfinite(pred).all():
        raise ValueError(
            f"The predictions under {key!r} have NaN or infinite values among the scored spots."
        )
    truth = _anndata.expression(adata, layer, obs=spots, var=genes)
    _anndata.warn_if_counts(truth, layer)
    section_key = _anndata.library_key(adata, library_key)

    metrics = _metrics.gene_metrics(truth, pred)
    bounds = _bounds(adata, key, spots, genes) if _has_bounds(adata, key) else None
    if bounds is not None:
        metrics.update(_coverage(truth, *bounds))
    table = pd.DataFrame(metrics, index=pd.Index(measured, name=None))
    record = {
        **field_summary(truth, metrics),
        **_interval_summary(metrics, adata, key),
        "n_spots": len(spots),
        "split": "all" if split is None else split,
        "key": key,
        "layer": "X" if layer is None else layer,
    }
    if section_key is not None:
        labels = adata.obs[section_key].astype(str).to_numpy()[spots]
        by_library, rows = {}, []
        for name in dict.fromkeys(labels):
            here = labels == name
            section = _metrics.gene_metrics(truth[here], pred[here])
            if bounds is not None:
                section.update(_coverage(truth[here], bounds[0][here], bounds[1][here]))
            by_library[name] = {
                **field_summary(truth[here], section),
                **_interval_summary(section, adata, key),
                "n_spots": int(here.sum()),
            }
            rows.append(pd.DataFrame({section_key: name, **section}, index=pd.Index(measured)))
        record["by_library"] = by_library
        record["library_key"] = section_key
        table = pd.concat(rows)

    for name in names:
        column = np.full(adata.n_vars, np.nan)
        column[genes] = metrics[name]
        adata.var[f"{key_added}_{name}"] = column
    adata.uns[record_key] = _owner.mark(record, WRITER)
    return table


#: Per-gene scores of ``tl.impute(..., interval=)``'s bounds: share of spots inside, mean width.
INTERVAL_METRICS = ("coverage", "width")


def _has_bounds(adata: ad.AnnData, key: str) -> bool:
    return all(spread_layer_key(key, role) in adata.layers for role in ("lower", "upper"))


def _bounds(adata, key: str, spots, genes) -> tuple[np.ndarray, np.ndarray]:
    """The lower and upper bounds of the scored spots and genes."""
    found = []
    for role in ("lower", "upper"):
        values = adata.layers[spread_layer_key(key, role)][spots][:, genes]
        values = values.toarray() if hasattr(values, "toarray") else np.asarray(values)
        found.append(values.astype(np.float64))
    return found[0], found[1]


def _coverage(truth: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> dict[str, np.ndarray]:
    inside = (truth >= lower) & (truth <= upper)
    return {"coverage": inside.mean(axis=0), "width": (upper - lower).mean(axis=0)}


def _interval_summary(metrics: dict, adata: ad.AnnData, key: str) -> dict:
    """Mean coverage and width over genes, and the level asked for, when there are bounds."""
    if "coverage" not in metrics:
        return {}
    level = (_predictions.record(adata, key).get("params") or {}).get("interval")
    return {
        "coverage": float(np.mean(metrics["coverage"])),
        "width": float(np.mean(metrics["width"])),
        "interval": level,
    }


def _renamed_arguments(adata, key, layer, truth_layer) -> tuple[str, str | None]:
    """``(key, layer)`` from a call that may use the names of stmix 0.1.

    In 0.1 ``layer`` named the predictions and ``truth_layer`` the measurements. A call with
    ``truth_layer``, or whose ``layer`` names predictions stmix wrote, is read the old way.
    """
    if truth_layer is not UNSET:
        _deprecation.warn("evaluate(truth_layer=...)", "layer=...", stacklevel=4)
        if layer is not None:
            _deprecation.warn("evaluate(layer=<predictions>)", "key=...", stacklevel=4)
            key = layer
        return key, truth_layer
    if layer is not None and _names_predictions(adata, layer):
        _deprecation.warn("evaluate(layer=<predictions>)", "key=...", stacklevel=4)
        return layer, None
    return key, layer


def _names_predictions(adata: ad.AnnData, name: str) -> bool:
    """Whether ``name`` is a key of predictions stmix wrote (not a measured layer)."""
    marked = predicted_key(name) in adata.var.columns
    return marked or (name in adata.obsm and isinstance(adata.obsm[name], pd.DataFrame))


def field_summary(truth: np.ndarray, metrics: dict[str, np.ndarray]) -> dict[str, float | int]:
    """The literature's numbers: mean PCC over genes, HEG PCC, MSE, MAE, genes skipped."""
    overall = _metrics.summary(metrics)
    varies = truth.std(axis=0) > 0
    pcc = metrics["pcc"]
    top = np.argsort(-truth.mean(axis=0), kind="stable")[: _metrics.HEG]
    top_pcc = pcc[top]
    return {
        **overall,
        "pcc_heg": float(np.nanmean(top_pcc)) if np.isfinite(top_pcc).any() else float("nan"),
        "n_genes": len(pcc),
        "n_skipped": int((~varies).sum()),
    }
