"""Small bins summed into larger square spots (Visium HD's 8 µm bins into 16 or 55 µm)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from stmix import _anndata, _validate
from stmix._docs import doc_params
from stmix._keys import SPATIAL
from stmix.errors import MissingKeyError


@doc_params
def aggregate(
    adata: ad.AnnData,
    size_um: float,
    *,
    library_key: str | None = None,
    spatial_key: str = SPATIAL,
) -> ad.AnnData:
    """Sum the counts of bins into square spots of side ``size_um``.

    The squares tile each section from its bins' corner, so 2 × 2 bins of 8 µm make one 16 µm
    spot exactly; a 55 µm spot sums the bins whose centres fall in its square. Expression must
    be counts (``X`` and every layer are summed). The spots' side becomes their
    ``spot_diameter_fullres``, so :func:`stmix.pp.patches` cuts patches of their physical size.

    Parameters
    ----------
    adata
        Bins with ``obsm[spatial_key]`` (their centres, full-resolution pixels) and
        ``uns["spatial"][library]["metadata"]["microns_per_pixel"]``.
    size_um
        Side of the new spots, in µm.
    library_key
        {library_key}
    spatial_key
        {spatial_key}

    Returns
    -------
    anndata.AnnData
        A new AnnData: the summed ``X`` and layers, ``obs["n_bins"]``, ``obs["array_row"]``,
        ``obs["array_col"]`` (and the section column), ``obsm["spatial"]`` (square centres) and
        ``uns["spatial"]`` with ``spot_diameter_fullres`` the new side in pixels.
    """
    size_um = _validate.number("size_um", size_um, above=0)
    coords = _anndata.spatial_coordinates(adata, spatial_key)
    key = _anndata.library_key(adata, library_key)
    sections = _anndata.libraries(adata, key) if key else {None: np.arange(adata.n_obs)}
    parts = {}
    for name, rows in sections.items():
        library, entry = _anndata.library(adata, name)
        mpp = (entry.get("metadata") or {}).get("microns_per_pixel")
        if not mpp:
            raise MissingKeyError(
                f"adata.uns['spatial'][{library!r}]['metadata'] has no 'microns_per_pixel': the "
                f"bins' size in µm is unknown."
            )
        parts[library] = _section(adata[rows], coords[rows], library, entry, size_um / float(mpp))
    if len(parts) == 1:
        return next(iter(parts.values()))
    from stmix.pp._concat import concat

    return concat(parts, library_key=key)


def _section(bins: ad.AnnData, xy: np.ndarray, library: str, entry: dict, side: float):
    bin_side = float((entry.get("scalefactors") or {}).get("spot_diameter_fullres") or 0.0)
    origin = xy.min(axis=0) - bin_side / 2
    cells = np.floor((xy - origin) / side).astype(np.int64)
    keys, group = np.unique(cells, axis=0, return_inverse=True)
    group = group.ravel()
    summing = sparse.csr_matrix(
        (np.ones(len(group), dtype=np.float32), (group, np.arange(len(group)))),
        shape=(len(keys), len(group)),
    )
    names = [f"{library}_{row}x{col}" for col, row in keys]
    obs = pd.DataFrame(
        {
            "n_bins": np.bincount(group),
            "array_row": keys[:, 1],
            "array_col": keys[:, 0],
        },
        index=pd.Index(names, dtype=str),
    )
    out = ad.AnnData(X=_sum(summing, bins.X), obs=obs, var=bins.var.copy())
    for layer, values in bins.layers.items():
        out.layers[layer] = _sum(summing, values)
    out.obsm[SPATIAL] = origin + (keys + 0.5) * side
    copied = {**entry, "scalefactors": {**(entry.get("scalefactors") or {})}}
    copied["scalefactors"]["spot_diameter_fullres"] = float(side)
    out.uns[SPATIAL] = {library: copied}
    return out


def _sum(summing: sparse.csr_matrix, values) -> sparse.csr_matrix:
    matrix = values if sparse.issparse(values) else sparse.csr_matrix(np.asarray(values))
    return sparse.csr_matrix(summing @ matrix)
