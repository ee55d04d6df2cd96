"""Assigning spots to training, validation and test sets."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from stmix import _validate
from stmix._keys import SPLIT, SPLIT_CATEGORIES


def split(
    adata: ad.AnnData,
    train: float = 0.3,
    val: float = 0.2,
    *,
    seed: int = 0,
    key_added: str = SPLIT,
    copy: bool = False,
) -> ad.AnnData | None:
    """Randomly assign spots to ``train``, ``val`` and ``test``.

    The first ``floor(n * train)`` spots of ``numpy.random.default_rng(seed).permutation(n)``
    train, the next ``floor(n * val)`` validate and the rest test: the paper's 30/20/50 protocol,
    and the same spots as the public reference implementation for the same seed.

    Parameters
    ----------
    adata
        Any AnnData.
    train
        Fraction of spots to train on, in (0, 1).
    val
        Fraction of spots for validation (early stopping), in [0, 1).
    seed
        Seed of the permutation.
    key_added
        Column of ``obs`` to write.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    anndata.AnnData or None
        ``None``, or a new AnnData when ``copy=True``; either way ``obs[key_added]`` holds the
        categorical labels ``train`` / ``val`` / ``test``.
    """
    n = adata.n_obs
    train = _validate.number("train", train, above=0, below=1)
    val = _validate.number("val", val, at_least=0, below=1)
    seed = _validate.integer("seed", seed, minimum=0)
    if train + val >= 1:
        raise ValueError(
            f"`train` + `val` = {train + val:g} leaves no test spots; it must be below 1."
        )
    n_train, n_val = int(np.floor(n * train)), int(np.floor(n * val))
    if n_train < 1:
        raise ValueError(f"{n} spots × train={train} leaves no training spot.")
    order = np.random.default_rng(seed).permutation(n)
    labels = np.empty(n, dtype=object)
    labels[order[:n_train]] = "train"
    labels[order[n_train : n_train + n_val]] = "val"
    labels[order[n_train + n_val :]] = "test"

    adata = adata.copy() if copy else adata
    adata.obs[key_added] = pd.Categorical(labels, categories=list(SPLIT_CATEGORIES))
    return adata if copy else None
