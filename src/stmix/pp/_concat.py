"""Several sections in one AnnData, in squidpy's multi-library layout."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import anndata as ad
import pandas as pd

from stmix._keys import LIBRARY_KEY, SPATIAL
from stmix.errors import InputTypeError

logger = logging.getLogger(__name__)


def concat(
    adatas: Mapping[str, ad.AnnData] | Sequence[ad.AnnData],
    *,
    library_key: str = LIBRARY_KEY,
    join: str = "inner",
) -> ad.AnnData:
    """Put several sections into one AnnData, as squidpy expects them.

    This is :func:`anndata.concat` with what several sections need: each spot's section in
    ``obs[library_key]`` (categorical, in the given order), each section's images and scale
    factors under its name in ``uns["spatial"]``, spot names made unique by appending
    ``-<section>``, and the genes the sections have in common (``join="inner"``; a log line says
    how many were dropped). Expression, layers, ``obsm`` entries present in every section
    (``spatial``, patches of one size) and ``obs`` columns are kept.

    Parameters
    ----------
    adatas
        ``{section: AnnData}``, or AnnData that hold one library each in ``uns["spatial"]``
        (its key names the section).
    library_key
        Column of ``obs`` to write the section into.
    join
        ``"inner"`` (genes in every section) or ``"outer"`` (all genes, missing ones as 0).

    Returns
    -------
    anndata.AnnData
        The sections, one after the other.
    """
    if join not in ("inner", "outer"):
        raise ValueError(f"`join` must be 'inner' or 'outer', not {join!r}.")
    named = _named(adatas)
    if len(named) < 1:
        raise ValueError("`adatas` is empty.")
    for name, section in named.items():
        if section.var_names.has_duplicates:
            raise ValueError(
                f"Section {name!r} has duplicated var_names; run adata.var_names_make_unique()."
            )
    common = set.intersection(*(set(a.var_names) for a in named.values()))
    every = set.union(*(set(a.var_names) for a in named.values()))
    if join == "inner" and not common and every:
        sizes = ", ".join(f"{n}: {a.n_vars}" for n, a in named.items())
        raise ValueError(
            f"The sections have no gene in common ({sizes} genes); check that they name genes "
            f"the same way (symbols or Ensembl ids), or pass join='outer'."
        )
    if join == "inner" and len(every) > len(common):
        logger.warning(
            "Kept the %d genes all %d sections share; dropped %d genes measured in only some.",
            len(common),
            len(named),
            len(every) - len(common),
        )

    spatial = {}
    for name, section in named.items():
        entries = section.uns.get(SPATIAL) or {}
        if len(entries) == 1:
            spatial[name] = next(iter(entries.values()))
    parts = []
    for section in named.values():
        part = section.copy()
        part.uns = {k: v for k, v in part.uns.items() if k != SPATIAL}
        parts.append(part)
    out = ad.concat(
        parts,
        join=join,
        label=library_key,
        keys=list(named),
        index_unique="-",
        uns_merge="same",
        merge="same",
    )
    out.obs[library_key] = pd.Categorical(out.obs[library_key], categories=list(named))
    if spatial:
        out.uns[SPATIAL] = spatial
    return out


def _named(adatas) -> dict[str, ad.AnnData]:
    if isinstance(adatas, Mapping):
        named = {str(name): section for name, section in adatas.items()}
    else:
        named = {}
        for position, section in enumerate(adatas):
            entries = section.uns.get(SPATIAL)
            if not isinstance(entries, dict) or len(entries) != 1:
                raise ValueError(
                    f"Section {position} does not hold exactly one library in "
                    f"uns['spatial'] to name it by; pass a dict {{name: adata}} instead."
                )
            name = str(next(iter(entries)))
            if name in named:
                raise ValueError(
                    f"Two sections are both named {name!r} in uns['spatial']; pass a dict "
                    f"{{name: adata}} with unique names."
                )
            named[name] = section
    for name, section in named.items():
        if not isinstance(section, ad.AnnData):
            raise InputTypeError(f"Section {name!r} is a {type(section).__name__}, not an AnnData.")
        entries = section.uns.get(SPATIAL)
        if isinstance(entries, dict) and len(entries) > 1:
            raise ValueError(
                f"Section {name!r} already holds several libraries in uns['spatial'] "
                f"({sorted(entries)}); concatenate single sections."
            )
    return named
