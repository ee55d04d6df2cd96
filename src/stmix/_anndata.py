"""Reading validated inputs out of an AnnData.

Every public function reads its inputs through these helpers *before* it writes anything, so a
call that fails leaves the AnnData as it was, and the same mistake gets the same message
everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from stmix import _options
from stmix._keys import LIBRARY_KEY, SPATIAL, SPLIT_CATEGORIES
from stmix.errors import MissingKeyError

logger = logging.getLogger("stmix")


def spatial_coordinates(adata: ad.AnnData, key: str = SPATIAL) -> np.ndarray:
    """Spot centres ``obsm[key]`` as a float64 (n_obs, 2) array, checked."""
    if key not in adata.obsm:
        raise MissingKeyError(
            f"adata.obsm[{key!r}] is missing: stmix needs the spot centres in full-resolution "
            f"image pixels (x, y), as scanpy.read_visium and stmix.datasets write them."
        )
    coords = np.asarray(adata.obsm[key], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise ValueError(f"adata.obsm[{key!r}] must have shape (n_obs, 2), not {coords.shape}.")
    coords = coords[:, :2]
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        raise ValueError(
            f"adata.obsm[{key!r}] has non-finite coordinates for {bad.sum()} spots, "
            f"e.g. {list(adata.obs_names[bad][:3])}."
        )
    return coords


def check_distinct(coords: np.ndarray, names) -> None:
    """Two spots of one section at one position are a data error (duplicated rows?)."""
    order = np.lexsort((coords[:, 1], coords[:, 0]))
    same = np.flatnonzero((np.diff(coords[order], axis=0) == 0).all(axis=1))
    if len(same):
        a, b = names[order[same[0]]], names[order[same[0] + 1]]
        raise ValueError(
            f"{len(same)} spots share a position with another spot of their section in "
            f"obsm['spatial'], e.g. {a!r} and {b!r} at {tuple(coords[order[same[0]]])}; each "
            f"spot needs its own position (duplicated rows?)."
        )


def library(adata: ad.AnnData, library_id: str | None = None) -> tuple[str, dict]:
    """The ``uns["spatial"]`` entry of ``library_id`` (or of the only library)."""
    libraries = adata.uns.get(SPATIAL)
    if not isinstance(libraries, dict) or not libraries:
        load = "load" if _options.offers("image") else "Load"
        give = (
            f"Pass the image with {_options.arg('image')} or " if _options.offers("image") else ""
        )
        raise MissingKeyError(
            "adata.uns['spatial'] is missing: no image or scale factors are stored with this "
            f"AnnData. {give}{load} the data with scanpy.read_visium / stmix.datasets."
        )
    if library_id is None:
        if len(libraries) > 1:
            raise ValueError(
                f"adata.uns['spatial'] holds several libraries {sorted(libraries)}; "
                f"choose one with `library_id=`."
            )
        library_id = next(iter(libraries))
    if library_id not in libraries:
        raise MissingKeyError(
            f"Library {library_id!r} is not in adata.uns['spatial'] "
            f"(libraries: {sorted(libraries)})."
        )
    return library_id, libraries[library_id]


def library_key(adata: ad.AnnData, key: str | None) -> str | None:
    """The ``obs`` column naming each spot's section, or ``None`` for a single section.

    ``key`` given: it must be a column of ``obs``. ``key=None``: ``"library_id"`` when
    ``uns["spatial"]`` holds several libraries and ``obs["library_id"]`` exists (squidpy's
    convention), else ``None``. Several libraries and no such column is an error: the spots'
    sections cannot be told apart.
    """
    if key is not None:
        if key not in adata.obs.columns:
            raise MissingKeyError(
                f"`library_key={key!r}` is not a column of adata.obs (columns: "
                f"{list(adata.obs.columns)}); it names each spot's section, as squidpy's "
                f"library_key does."
            )
        if adata.obs[key].isna().any():
            raise ValueError(f"adata.obs[{key!r}] is missing for some spots.")
        return key
    libraries = adata.uns.get(SPATIAL)
    several = isinstance(libraries, dict) and len(libraries) > 1
    if several and LIBRARY_KEY in adata.obs.columns:
        return LIBRARY_KEY
    if several:
        raise ValueError(
            f"adata.uns['spatial'] holds {len(libraries)} libraries {sorted(libraries)} but "
            f"adata.obs has no {LIBRARY_KEY!r} column, so stmix cannot tell which spots belong "
            f"to which section: name the column with `library_key=`, or, for one section, keep "
            f"only its library in adata.uns['spatial']."
        )
    return None


def libraries(adata: ad.AnnData, key: str | None) -> dict[str, np.ndarray]:
    """Each library's spots (integer positions), in the order the libraries first appear.

    ``key=None`` is one library holding every spot, named after the only ``uns["spatial"]``
    library (or ``""`` when there is none).
    """
    if key is None:
        entries = adata.uns.get(SPATIAL)
        name = next(iter(entries)) if isinstance(entries, dict) and len(entries) == 1 else ""
        return {str(name): np.arange(adata.n_obs)}
    labels = adata.obs[key].astype(str).to_numpy()
    names = list(dict.fromkeys(labels))
    return {name: np.flatnonzero(labels == name) for name in names}


def expression(
    adata: ad.AnnData,
    layer: str | None = None,
    *,
    obs: np.ndarray | slice | None = None,
    var: np.ndarray | slice | None = None,
    dtype: type = np.float32,
) -> np.ndarray:
    """Dense expression of ``layer`` (``None``: ``X``) for some spots and genes, checked finite."""
    if layer is not None and layer not in adata.layers:
        raise MissingKeyError(
            f"adata.layers[{layer!r}] does not exist (layers: {list(adata.layers)})."
        )
    matrix = adata.X if layer is None else adata.layers[layer]
    if matrix is None:
        raise ValueError(
            f"adata.X is empty; pass {_options.arg('layer')} to read expression from a layer."
        )
    obs = slice(None) if obs is None else obs
    var = slice(None) if var is None else var
    matrix = matrix[obs][:, var]
    matrix = matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)
    matrix = matrix.astype(dtype, copy=False)
    if not np.isfinite(matrix).all():
        where = "X" if layer is None else f"layers[{layer!r}]"
        n_bad = int((~np.isfinite(matrix)).sum())
        raise ValueError(
            f"adata.{where} holds {n_bad} NaN or infinite values in the spots and genes used; "
            f"impute or drop them first."
        )
    return matrix


def check_unique_genes(adata: ad.AnnData) -> None:
    """Genes are looked up by name: duplicated ``var_names`` make that ambiguous."""
    if adata.var_names.has_duplicates:
        duplicated = adata.var_names[adata.var_names.duplicated()].unique()
        raise ValueError(
            f"adata.var_names has duplicates ({len(duplicated)} names, e.g. "
            f"{list(duplicated[:3])}); run adata.var_names_make_unique() first."
        )


def gene_indices(adata: ad.AnnData, genes: Sequence[str] | None) -> np.ndarray:
    """Column indices of ``genes`` in ``adata.var_names`` (all genes when ``None``)."""
    check_unique_genes(adata)
    if genes is None:
        return np.arange(adata.n_vars)
    genes = [genes] if isinstance(genes, str) else list(genes)
    if len(genes) == 0:
        raise ValueError(f"{_options.name('genes')} is empty.")
    index = adata.var_names.get_indexer(genes)
    missing = [g for g, i in zip(genes, index, strict=True) if i < 0]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise MissingKeyError(f"Genes not in adata.var_names: {missing[:5]}{more}.")
    if len(set(index)) != len(index):
        raise ValueError(f"{_options.name('genes')} lists a gene more than once.")
    return index


def genes(adata: ad.AnnData, genes: Sequence[str] | str | None) -> np.ndarray:
    """Column indices of ``genes``: names, a boolean ``var`` column's name, or ``None`` (all)."""
    if isinstance(genes, str) and genes in adata.var.columns:
        column = adata.var[genes]
        if column.dtype != bool:
            raise ValueError(f"adata.var[{genes!r}] must be boolean to select genes.")
        if not column.any():
            raise ValueError(f"adata.var[{genes!r}] selects no gene.")
        return np.flatnonzero(column.to_numpy())
    return gene_indices(adata, genes)


def patches(adata: ad.AnnData, key: str, size: int | None = None):
    """The uint8 (n_obs, size, size, 3) patches of ``obsm[key]``, checked (and their size).

    In-memory patches come as a NumPy array; patches in a store as a lazy dask array (never
    read whole here). When ``obsm[key]`` is gone but ``uns[key]`` names a store, the store is
    opened again.
    """
    if key not in adata.obsm:
        params = (adata.uns.get(key) or {}).get("params") or {}
        if params.get("store"):
            from stmix import _store

            records = params.get("by_library") or {params.get("library_id", ""): params}
            return _store.lazy(adata.n_obs, records, int(params["size"]))
        hint = "" if size is None else f"size={size}"
        raise MissingKeyError(
            f"adata.obsm[{key!r}] is missing: cut the H&E patches first with "
            f"stmix.pp.patches(adata, {hint or 'size=...'})."
        )
    cut = adata.obsm[key]
    shape = tuple(cut.shape)
    if cut.dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
        raise ValueError(
            f"adata.obsm[{key!r}] must be uint8 (n_obs, size, size, 3) as stmix.pp.patches "
            f"writes it, not {cut.dtype} {shape}."
        )
    if size is not None and shape[1] != size:
        raise ValueError(
            f"adata.obsm[{key!r}] holds {shape[1]} × {shape[1]} px patches, but the model takes "
            f"{size} × {size}: run stmix.pp.patches(adata, size={size})."
        )
    return cut if hasattr(cut, "dask") else np.asarray(cut)


def spot_geometry(adata: ad.AnnData, patches_key: str) -> dict[str, float | None]:
    """Spot diameter (full-resolution pixels) of the patches, and the pixel size when known.

    With several sections, the median over them. ``microns_per_pixel`` comes from each library's
    ``uns["spatial"][...]["metadata"]`` (as ``stmix.datasets`` and ``pp.tile`` write it).
    """
    params = (adata.uns.get(patches_key) or {}).get("params") or {}
    records = params.get("by_library") or {params.get("library_id", ""): params}
    diameters = [r.get("spot_diameter") for r in records.values() if r.get("spot_diameter")]
    libraries = adata.uns.get(SPATIAL) if isinstance(adata.uns.get(SPATIAL), dict) else {}
    names = [name for name in records if name in libraries] or list(libraries)
    sizes = [((libraries[n] or {}).get("metadata") or {}).get("microns_per_pixel") for n in names]
    diameter = float(np.median(diameters)) if diameters else None
    mpp = float(np.median(sizes)) if sizes and all(size for size in sizes) else None
    return {
        "spot_diameter_px": diameter,
        "microns_per_pixel": mpp,
        "spot_diameter_um": None if diameter is None or mpp is None else diameter * mpp,
    }


def split_labels(adata: ad.AnnData, key: str) -> pd.Series:
    """The train / val / test labels of ``obs[key]``, checked."""
    if key not in adata.obs:
        raise MissingKeyError(
            f"adata.obs[{key!r}] is missing: assign training, validation and test spots with "
            f"stmix.pp.split(adata) first (or pass `split_key=`)."
        )
    labels = adata.obs[key].astype(str)
    unknown = sorted(set(labels) - set(SPLIT_CATEGORIES))
    if unknown:
        raise ValueError(
            f"adata.obs[{key!r}] has labels {unknown}; expected only {list(SPLIT_CATEGORIES)}."
        )
    return labels


def split_indices(adata: ad.AnnData, key: str, split: str) -> np.ndarray:
    """Integer positions of the spots labelled ``split`` in ``obs[key]``."""
    if split not in SPLIT_CATEGORIES:
        raise ValueError(
            f"{_options.name('split')} must be one of {list(SPLIT_CATEGORIES)}, not {split!r}."
        )
    return np.flatnonzero(split_labels(adata, key).to_numpy() == split)


def labelled(adata: ad.AnnData, key: str, split: str | None) -> np.ndarray:
    """:func:`split_indices`, every spot for ``split=None``, and an error when none is labelled."""
    if split is None:
        return np.arange(adata.n_obs)
    spots = split_indices(adata, key, split)
    if not len(spots):
        raise ValueError(f"No spot is labelled {split!r} in adata.obs[{key!r}].")
    return spots


def warn_if_counts(y: np.ndarray, layer: str | None) -> None:
    """Warn when expression looks like raw counts (all integers) instead of log-normalised."""
    sample = y[: min(len(y), 50)]
    if sample.size and sample.max() >= 2 and np.all(np.mod(sample, 1) == 0):
        logger.warning(
            "The expression in %s looks like raw counts; stmix expects log-normalised "
            "expression (scanpy.pp.normalize_total + scanpy.pp.log1p).",
            "X" if layer is None else f"layers[{layer!r}]",
        )
