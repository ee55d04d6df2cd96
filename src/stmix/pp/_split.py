"""Assigning spots, or whole sections, to training, validation and test sets."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from stmix import _anndata, _owner, _validate
from stmix._docs import doc_params
from stmix._keys import SPLIT, SPLIT_CATEGORIES
from stmix.errors import MissingKeyError

BY = ("spot", "library")
WRITER = "stmix.pp.split"


@doc_params
def split(
    adata: ad.AnnData,
    train: float = 0.3,
    val: float | Sequence[str] = 0.2,
    *,
    test: Sequence[str] | None = None,
    by: str | None = None,
    seed: int = 0,
    library_key: str | None = None,
    key_added: str = SPLIT,
    copy: bool = False,
) -> ad.AnnData | None:
    """Assign spots to ``train``, ``val`` and ``test``: at random, or whole sections.

    - **By spot** (the default): the first ``floor(n * train)`` spots of
      ``numpy.random.default_rng(seed).permutation(n)`` train, the next ``floor(n * val)``
      validate and the rest test: the paper's 30/20/50 protocol, and the same spots as the
      public reference implementation for the same seed. With several sections
      (``library_key``), each section is split this way on its own.
    - **Held-out sections** (the field's leave-one-section-out protocol): ``test=["C5"]`` tests
      on all spots of section C5; ``val=["C4"]`` validates on section C4, or ``val=0.1`` on a
      random tenth of the spots of each other section (drawn per section with ``seed``, so
      every training section validates in proportion); every other spot trains.
    - **A fraction of sections** (``by="library"``): the sections are shuffled with ``seed``;
      the first ``floor(n_sections * train)`` train, the next ``floor(n_sections * val)``
      validate, the rest test.

    Parameters
    ----------
    adata
        Any AnnData; for sections, with ``obs[library_key]``.
    train
        Fraction of spots (or of sections, ``by="library"``) to train on, in (0, 1); unused when
        ``test`` names sections.
    val
        Fraction of spots (or sections) for validation (early stopping), in [0, 1), or the names
        of the validation sections.
    test
        Names of the test sections.
    by
        ``"spot"`` or ``"library"``; default ``"library"`` when ``test`` or ``val`` name
        sections, else ``"spot"``.
    seed
        Seed of the permutations.
    library_key
        {library_key}
    key_added
        Column of ``obs`` to write.
    copy
        {copy}

    Returns
    -------
    anndata.AnnData or None
        ``None``, or a new AnnData when ``copy=True``; either way ``obs[key_added]`` holds the
        categorical labels ``train`` / ``val`` / ``test`` and ``uns[key_added]["params"]`` how
        they were drawn (with the sections of each set).
    """
    seed = _validate.integer("seed", seed, minimum=0)
    _owner.claim(adata, WRITER, key_added, [("obs", key_added), ("uns", key_added)])
    named_val = not isinstance(val, (int, float, np.integer, np.floating))
    if by is None:
        by = "library" if (test is not None or named_val) else "spot"
    _validate.choice("by", by, BY)
    key = _anndata.library_key(adata, library_key)
    if by == "library" and key is None:
        raise ValueError(
            "Holding out sections needs each spot's section: pass `library_key=` (a column of "
            "adata.obs, e.g. 'library_id' as stmix.pp.concat writes it)."
        )
    if key is not None:
        sections = _anndata.libraries(adata, key)
    params: dict = {"by": by, "seed": seed}

    if by == "library" and (test is not None or named_val):
        labels, chosen = _held_out(adata, sections, val, test, seed)
        params.update(chosen)
    elif by == "library":
        train = _validate.number("train", train, above=0, below=1)
        val = _validate.number("val", val, at_least=0, below=1)
        names = list(sections)
        order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
        n_train, n_val = int(np.floor(len(names) * train)), int(np.floor(len(names) * val))
        if n_train < 1 or len(names) - n_train - n_val < 1:
            raise ValueError(
                f"{len(names)} sections × train={train:g}, val={val:g} leave no training or no "
                f"test section; hold sections out by name with `test=[...]`."
            )
        labels = np.empty(adata.n_obs, dtype=object)
        for position, name in enumerate(order):
            label = (
                "train" if position < n_train else "val" if position < n_train + n_val else "test"
            )
            labels[sections[name]] = label
        params.update(
            train=order[:n_train],
            val=order[n_train : n_train + n_val],
            test=order[n_train + n_val :],
        )
    else:
        if test is not None or named_val:
            raise ValueError("`test` and named `val` sections need by='library'.")
        train = _validate.number("train", train, above=0, below=1)
        val = _validate.number("val", val, at_least=0, below=1)
        if train + val >= 1:
            raise ValueError(
                f"`train` + `val` = {train + val:g} leaves no test spots; it must be below 1."
            )
        labels = np.empty(adata.n_obs, dtype=object)
        groups = {"": np.arange(adata.n_obs)} if key is None else sections
        for index, (name, spots) in enumerate(groups.items()):
            rng = np.random.default_rng(seed if key is None else [seed, index])
            labels[spots] = _by_spot(len(spots), train, val, rng, name)
        params.update(train=train, val=val)

    adata = adata.copy() if copy else adata
    adata.obs[key_added] = pd.Categorical(labels, categories=list(SPLIT_CATEGORIES))
    if key is not None:
        params["library_key"] = key
    adata.uns[key_added] = _owner.mark({"params": params}, WRITER)
    return adata if copy else None


def _by_spot(n: int, train: float, val: float, rng: np.random.Generator, name: str) -> np.ndarray:
    n_train, n_val = int(np.floor(n * train)), int(np.floor(n * val))
    if n_train < 1:
        where = f" of section {name!r}" if name else ""
        raise ValueError(f"{n} spots{where} × train={train} leaves no training spot.")
    order = rng.permutation(n)
    labels = np.empty(n, dtype=object)
    labels[order[:n_train]] = "train"
    labels[order[n_train : n_train + n_val]] = "val"
    labels[order[n_train + n_val :]] = "test"
    return labels


def _held_out(adata, sections, val, test, seed) -> tuple[np.ndarray, dict]:
    names = list(sections)
    test = [] if test is None else ([test] if isinstance(test, str) else list(test))
    val_names = [val] if isinstance(val, str) else list(val) if not _is_fraction(val) else []
    for given, what in ((test, "test"), (val_names, "val")):
        unknown = [s for s in given if str(s) not in sections]
        if unknown:
            raise MissingKeyError(
                f"`{what}` names sections that do not exist: {unknown}; the sections are {names}."
            )
    if set(map(str, test)) & set(map(str, val_names)):
        raise ValueError("A section cannot be both a test and a validation section.")
    held = {str(s) for s in (*test, *val_names)}
    training = [s for s in names if s not in held]
    if not training:
        raise ValueError("Every section is held out: none is left to train on.")
    labels = np.full(adata.n_obs, "train", dtype=object)
    for name in test:
        labels[sections[str(name)]] = "test"
    for name in val_names:
        labels[sections[str(name)]] = "val"
    if _is_fraction(val):
        share = _validate.number("val", val, at_least=0, below=1)
        for index, name in enumerate(training):  # the same share of every training section
            spots = sections[name]
            rng = np.random.default_rng([seed, index])
            chosen = rng.permutation(spots)[: int(np.floor(len(spots) * share))]
            labels[chosen] = "val"
        if not (labels == "train").any():
            raise ValueError(f"val={share} leaves no training spot.")
    return labels, {"train": training, "val": val_names or float(val), "test": list(map(str, test))}


def _is_fraction(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
