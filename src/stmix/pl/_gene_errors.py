"""Per-gene errors of two predictions against each other (the paper's Figure 3)."""

from __future__ import annotations

import os

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stmix import _anndata, _predictions
from stmix._deprecation import renamed
from stmix._docs import doc_params
from stmix._keys import SPLIT
from stmix._metrics import gene_metrics
from stmix.errors import MissingKeyError
from stmix.pl._show import finish


@renamed("truth_layer", "layer")
@doc_params
def gene_errors(
    adata: ad.AnnData,
    a: str | pd.DataFrame | pd.Series,
    b: str | pd.DataFrame | pd.Series,
    *,
    labels: tuple[str, str] | None = None,
    split: str | None = "test",
    layer: str | None = None,
    split_key: str = SPLIT,
    log: bool = False,
    annotate: int = 5,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
) -> Figure | None:
    """Per-gene MSE under ``a`` (x) against ``b`` (y), with the diagonal.

    Genes below the diagonal are predicted better by ``b``; the title gives their share.

    Parameters
    ----------
    adata
        The spots.
    a, b
        Each a key of predictions (``layers[key]`` of :func:`stmix.tl.impute`, scored against
        ``layer`` on the ``split`` spots), a
        ``var`` column of per-gene MSE (such as ``"stmix_mse"`` from :func:`stmix.tl.evaluate`),
        or the DataFrame :func:`stmix.tl.evaluate` returned (its ``mse`` column).
    labels
        Axis labels; default the layer / column names.
    split, split_key
        The spots to score predictions on.
    layer
        Layer of the measured expression to score predictions against; ``None`` uses ``X``.
    log
        Logarithmic axes.
    annotate
        Name the genes that ``b`` improves most and worsens most (this many each).
    show
        {show}
    save
        {save}

    Returns
    -------
    matplotlib.figure.Figure or None
        The figure when ``show=False``, else ``None``.
    """
    x = _mse(adata, a, split, layer, split_key)
    y = _mse(adata, b, split, layer, split_key)
    both = pd.concat([x.rename("a"), y.rename("b")], axis=1, join="inner").dropna()
    if both.empty:
        raise ValueError("`a` and `b` have no scored gene in common.")
    labels = labels or (_name(a, "a"), _name(b, "b"))
    below = float((both["b"] < both["a"]).mean())

    fig, ax = plt.subplots(figsize=(4.6, 4.4), layout="constrained")
    ax.scatter(both["a"], both["b"], s=10, alpha=0.6, color="tab:blue", linewidths=0)
    low, high = both.min().min(), both.max().max()
    pad = 0.05 * (high - low)
    ends = [max(low - pad, 1e-6) if log else low - pad, high + pad]
    ax.plot(ends, ends, color="0.3", lw=1, ls="--")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlim(ends)
    ax.set_ylim(ends)
    ax.set_aspect("equal")
    if annotate:
        _annotate(ax, both, annotate, ends, log)
    ax.set_xlabel(f"per-gene MSE, {labels[0]}")
    ax.set_ylabel(f"per-gene MSE, {labels[1]}")
    ax.set_title(f"{labels[1]} better for {below:.0%} of {len(both)} genes", fontsize=10)
    return finish(fig, show=show, save=save)


def _annotate(ax, both: pd.DataFrame, n: int, ends: list[float], log: bool) -> None:
    """Name the ``n`` genes most improved and most worsened, skipping labels that would overlap.

    Labels are placed greedily, largest change first; one that would sit within a label's
    width and height (in axes fractions) of a placed one is left out.
    """
    change = both["b"] - both["a"]
    chosen = [*change.nsmallest(n).index, *change.nlargest(n).index]
    chosen = sorted(dict.fromkeys(chosen), key=lambda gene: -abs(change[gene]))
    scale = np.log10 if log else (lambda v: v)
    low, high = scale(ends[0]), scale(ends[1])
    placed: list[tuple[float, float]] = []
    for gene in chosen:
        fx = (scale(both.loc[gene, "a"]) - low) / (high - low)
        fy = (scale(both.loc[gene, "b"]) - low) / (high - low)
        if any(abs(fx - px) < 0.16 and abs(fy - py) < 0.035 for px, py in placed):
            continue
        placed.append((fx, fy))
        ax.annotate(
            gene,
            (both.loc[gene, "a"], both.loc[gene, "b"]),
            fontsize=6,
            xytext=(2, 2),
            textcoords="offset points",
            color="0.25",
        )


def _mse(adata, source, split, layer, split_key) -> pd.Series:
    if isinstance(source, pd.DataFrame):
        if "mse" not in source:
            raise ValueError("A DataFrame for `a`/`b` needs an 'mse' column (stmix.tl.evaluate).")
        return source["mse"].astype(float)
    if isinstance(source, pd.Series):
        return source.astype(float)
    if source in adata.var.columns:
        return adata.var[source].astype(float)
    if _predictions.exists(adata, source) or source in adata.layers:
        frame = _predictions.read(adata, source)
        measured = [g for g in frame.columns if g in adata.var_names]
        spots = (
            np.arange(adata.n_obs)
            if split is None
            else _anndata.split_indices(adata, split_key, split)
        )
        truth = _anndata.expression(
            adata, layer, obs=spots, var=adata.var_names.get_indexer(measured)
        )
        pred = frame[measured].to_numpy(dtype=np.float64)[spots]
        return pd.Series(gene_metrics(truth, pred)["mse"], index=measured)
    raise MissingKeyError(f"{source!r} is neither predictions (a layer) nor a var column of adata.")


def _name(source, default: str) -> str:
    return source if isinstance(source, str) else default
