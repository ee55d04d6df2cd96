"""The score any model must beat: the mean training expression predicted everywhere."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np

from stmix import _anndata, _metrics
from stmix._keys import SPLIT


def training_mean(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    genes: Sequence[str] | str | None = None,
    split: str = "test",
    split_key: str = SPLIT,
) -> dict[str, float]:
    """The score of predicting the training spots' mean expression everywhere.

    The floor any model must beat: :func:`~stmix.tl.evaluate` scores predictions on the same
    spots and genes, so the two read side by side. Reads ``adata`` only.

    Parameters
    ----------
    adata
        Spots with the measured expression and ``obs[split_key]``.
    layer
        Layer of the measured expression; ``None``: ``X``.
    genes
        Genes to score: names, or the name of a boolean column of ``var``; ``None``: all.
    split
        Spots to score: ``"val"`` or ``"test"`` (the mean is always the ``"train"`` spots').
    split_key
        Column of ``obs`` holding the split (:func:`stmix.pp.split` writes it).

    Returns
    -------
    ``{"mse", "mae", "pcc"}`` averaged over genes; ``pcc`` is NaN (a constant prediction has no
    correlation).

    Examples
    --------
    >>> stmix.tl.training_mean(adata, split="test")["mse"]  # doctest: +SKIP
    """
    columns = _anndata.genes(adata, genes)
    train = _anndata.split_indices(adata, split_key, "train")
    spots = _anndata.split_indices(adata, split_key, split)
    if len(train) == 0 or len(spots) == 0:
        raise ValueError(
            f"The training mean needs 'train' and {split!r} spots in adata.obs[{split_key!r}]."
        )
    mean = _anndata.expression(adata, layer, obs=train, var=columns).mean(axis=0)
    truth = _anndata.expression(adata, layer, obs=spots, var=columns)
    return _metrics.summary(_metrics.gene_metrics(truth, np.broadcast_to(mean, truth.shape)))
