"""Training curves."""

from __future__ import annotations

import os
from typing import Any

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from stmix._docs import doc_params
from stmix._keys import FIT
from stmix.errors import InputTypeError, MissingKeyError
from stmix.pl._show import finish

#: Loss terms in the order they are drawn, with their labels.
TERMS = {
    "total": "total",
    "mse": "MSE",
    "vicinal": "vicinal MSE",
    "consistency": "consistency",
    "edge": "edge alignment",
    "correlation": "−Pearson",
}


@doc_params
def history(
    model_or_adata: Any,
    *,
    key: str = FIT,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
) -> Figure | None:
    """The loss terms and the validation MSE / PCC per epoch, with the best epoch marked.

    Parameters
    ----------
    model_or_adata
        A trained :class:`~stmix.tl.Imputer`, or an AnnData after :func:`stmix.tl.fit`.
    key
        Key of the fit record in ``uns`` (AnnData input).
    show
        {show}
    save
        {save}

    Returns
    -------
    matplotlib.figure.Figure or None
        The figure when ``show=False``, else ``None``.
    """
    columns, best = _columns(model_or_adata, key)
    epochs = np.asarray(columns["epoch"])
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for term, label in TERMS.items():
        values = columns.get(f"train_{term}")
        if term == "mse" and "train_total" in columns:
            continue  # without mixing the total is the MSE
        if values is not None:
            style = {"lw": 2.2, "color": "black"} if term == "total" else {"lw": 1.2}
            loss_ax.plot(epochs, values, label=label, **style)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss (terms unweighted)")
    loss_ax.set_title("training")
    loss_ax.legend(fontsize=8, frameon=False)

    if "val_mse" in columns:
        val_ax.plot(epochs, columns["val_mse"], color="tab:blue", lw=1.8, label="MSE")
        val_ax.set_ylabel("validation MSE", color="tab:blue")
        pcc_ax = val_ax.twinx()
        pcc_ax.plot(epochs, columns["val_pcc"], color="tab:orange", lw=1.8, label="PCC")
        pcc_ax.set_ylabel("validation PCC", color="tab:orange")
    else:
        val_ax.text(
            0.5, 0.5, "no validation spots", ha="center", va="center", transform=val_ax.transAxes
        )
    val_ax.set_xlabel("epoch")
    val_ax.set_title(f"validation (dashed: best epoch, {best})")
    for ax in (loss_ax, val_ax):
        ax.axvline(best, color="0.3", ls="--", lw=1)
    return finish(fig, show=show, save=save)


def _columns(obj: Any, key: str) -> tuple[dict, int]:
    if isinstance(obj, ad.AnnData):
        if key not in obj.uns or "history" not in obj.uns[key]:
            raise MissingKeyError(
                f"adata.uns[{key!r}] has no training history: run stmix.tl.fit first."
            )
        record = obj.uns[key]
        return {k: np.asarray(v) for k, v in record["history"].items()}, int(record["best_epoch"])
    if hasattr(obj, "history") and hasattr(obj, "config"):
        if not obj.history:
            raise ValueError("The model has no training history.")
        keys = dict.fromkeys(k for row in obj.history for k in row)
        columns = {k: np.array([row.get(k, np.nan) for row in obj.history]) for k in keys}
        return columns, int(obj.config.best_epoch)
    raise InputTypeError("Pass a model from stmix.tl.fit or an AnnData it was fitted on.")
