"""Where predictions live in an AnnData, and reading them back.

:func:`stmix.tl.impute` writes ``layers[key]`` over the genes of ``var`` and marks the predicted
genes in ``var[f"{key}_predicted"]``. The layer is dense float32 when the model predicts at least
half of ``var``, and otherwise a CSR matrix whose entries are exactly the predicted columns (a
64-gene model over 15,000 measured genes stores 64 values per spot, not 15,000), the smaller of
the two in memory and on disk. Columns of genes that were not predicted hold nothing (zeros).

:func:`stmix.tl.predict` returns an AnnData whose ``X`` holds the predictions; its record
``uns[f"{key}_impute"]`` says so (``"layer": None``). Files written before predictions moved to
a layer held them as a DataFrame in ``obsm[key]``: those are read too.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from stmix import _options
from stmix._keys import impute_uns_key, predicted_key
from stmix.errors import MissingKeyError


def layer(values: np.ndarray, columns: np.ndarray, n_vars: int) -> np.ndarray | sparse.csr_matrix:
    """A layer (n_obs, n_vars) holding ``values`` (n_obs, k) at the ``columns`` positions."""
    values = np.asarray(values, dtype=np.float32)
    n_obs, k = values.shape
    order = np.argsort(columns, kind="stable")
    if 2 * k >= n_vars:  # dense is no larger than CSR's value and index per entry
        out = np.zeros((n_obs, n_vars), dtype=np.float32)
        out[:, columns] = values
        return out
    indices = np.tile(np.asarray(columns, dtype=np.int32)[order], n_obs)
    indptr = np.arange(n_obs + 1, dtype=np.int64) * k
    data = np.ascontiguousarray(values[:, order]).ravel()
    return sparse.csr_matrix((data, indices, indptr), shape=(n_obs, n_vars))


def record(adata: ad.AnnData, key: str) -> dict:
    """The record of the step that wrote the predictions under ``key`` (``{}`` when none)."""
    found = adata.uns.get(impute_uns_key(key))
    return found if isinstance(found, dict) else {}


def in_x(adata: ad.AnnData, key: str) -> bool:
    """Whether ``X`` holds the predictions under ``key`` (from :func:`stmix.tl.predict`)."""
    params = record(adata, key).get("params") or {}
    return key not in adata.layers and "layer" in params and params["layer"] is None


def exists(adata: ad.AnnData, key: str) -> bool:
    """Whether there are predictions under ``key``."""
    legacy = isinstance(adata.obsm.get(key) if key in adata.obsm else None, pd.DataFrame)
    return key in adata.layers or in_x(adata, key) or legacy


def read(adata: ad.AnnData, key: str) -> pd.DataFrame:
    """The predictions under ``key``, spots × predicted genes, in the order the model lists them.

    A layer marked by ``var[f"{key}_predicted"]`` gives its marked genes; a layer without the
    column (one a user made) the genes that hold values (columns that are all NaN are genes it
    does not predict).
    """
    if key in adata.layers or in_x(adata, key):
        matrix = adata.layers[key] if key in adata.layers else adata.X
        column = predicted_key(key)
        if column in adata.var.columns:
            keep = adata.var[column].to_numpy(dtype=bool)
            values = _dense(matrix[:, np.flatnonzero(keep)])
        else:
            values = _dense(matrix)
            keep = ~np.isnan(values).all(axis=0)
            values = values[:, keep]
        frame = pd.DataFrame(values, index=adata.obs_names, columns=adata.var_names[keep])
        genes = (record(adata, key).get("params") or {}).get("genes")
        if genes is not None and set(genes) == set(frame.columns):
            frame = frame[list(genes)]
        return frame
    value = adata.obsm.get(key) if key in adata.obsm else None
    if isinstance(value, pd.DataFrame):
        return value
    raise MissingKeyError(
        f"No predictions under {key!r}: adata.layers[{key!r}] is missing (predict with "
        f"stmix.tl.impute(adata, model), or pass the {_options.name('key')} it wrote)."
    )


def _dense(matrix) -> np.ndarray:
    matrix = matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)
    return np.asarray(matrix, dtype=np.float32)
