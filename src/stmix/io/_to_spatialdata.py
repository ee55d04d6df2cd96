"""Predictions back into a SpatialData object: a table that spatialdata-plot and squidpy draw."""

from __future__ import annotations

import warnings
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from stmix import _owner, _predictions
from stmix._keys import PREDICTIONS, SPATIAL
from stmix.errors import MissingKeyError
from stmix.io._frames import IMAGE, INSTANCE, SHAPES, SYSTEM, spatialdata, systems

WRITER = "stmix.io.to_spatialdata"
#: Layers and ``obs`` columns written beside the predictions when they exist (``tl.impute``'s
#: spread, interval bounds and flag of unfamiliar tissue).
BESIDE_LAYERS = ("std", "lower", "upper")
BESIDE_OBS = ("ood",)


def to_spatialdata(
    adata: ad.AnnData, sdata: Any, *, key: str = PREDICTIONS, key_added: str = PREDICTIONS
) -> None:
    """Write the predictions into ``sdata`` as the table ``key_added``.

    Spots that came from ``sdata`` (:func:`stmix.io.from_spatialdata`) are annotated where they
    are: the table's rows are their shapes. Pseudo-spots of :func:`stmix.pp.tile` become new
    circles, ``shapes[f"{key_added}_<section>"]``, in the coordinate system of the image they
    were laid on. The table is replaced on a later call; a table or shapes element of that name
    that stmix did not write is refused. When ``sdata`` is backed by a zarr store, the elements
    are written there too (``spatialdata.read_zarr`` reads them back).

    Parameters
    ----------
    adata
        Spots with predictions: ``layers[key]`` (:func:`stmix.tl.impute`) or ``X`` of
        :func:`stmix.tl.predict`.
    sdata
        The :class:`spatialdata.SpatialData` to write into.
    key
        The predictions read.
    key_added
        The table written (and the prefix of new shapes).

    Returns
    -------
    None
        ``sdata.tables[key_added]``: ``X`` the predictions (spots × predicted genes),
        ``layers["std"]``, ``["lower"]``, ``["upper"]`` and ``obs["ood"]`` when ``adata`` holds
        them, ``obs["region"]`` and ``obs["instance_id"]`` (the shapes annotated) and
        ``uns["stmix"]`` naming its writer; new ``shapes[f"{key_added}_<section>"]`` for
        pseudo-spots.
    """
    spatialdata()
    from spatialdata.models import TableModel

    _owner.check_name(key_added)
    frame = _predictions.read(adata, key)
    parts, shapes = _annotations(adata, sdata, key_added)
    _check_free(sdata, key_added, shapes)
    table = ad.AnnData(X=frame.to_numpy(dtype=np.float32), var=pd.DataFrame(index=frame.columns))
    table.obs_names = adata.obs_names
    table.obs["region"] = pd.Categorical(parts["region"])
    table.obs["instance_id"] = parts["instance_id"]
    for role in BESIDE_LAYERS:
        if f"{key}_{role}" in adata.layers:
            table.layers[role] = _columns(adata.layers[f"{key}_{role}"], adata, frame.columns)
    for role in BESIDE_OBS:
        if f"{key}_{role}" in adata.obs:
            table.obs[role] = adata.obs[f"{key}_{role}"].to_numpy()
    table.uns["stmix"] = _owner.mark({"params": {"key": key}}, WRITER)
    regions = sorted(set(parts["region"]))
    table = TableModel.parse(table, region=regions, region_key="region", instance_key="instance_id")
    for name, element in shapes.items():
        sdata.shapes[name] = element
    sdata.tables[key_added] = table
    if getattr(sdata, "path", None) is not None:
        for name in [*shapes, key_added]:
            if name in _on_disk(sdata):
                sdata.delete_element_from_disk(name)
            with warnings.catch_warnings():  # zarr's notice of a future default, not the user's
                warnings.filterwarnings("ignore", "zarr v3 autosharding", UserWarning)
                sdata.write_element(name)


def _annotations(adata, sdata, key_added: str) -> tuple[dict, dict]:
    """Each spot's shapes element and instance, and the new shapes of pseudo-spots."""
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Affine

    region = np.empty(adata.n_obs, dtype=object)
    instance = np.empty(adata.n_obs, dtype=object)
    new = {}
    for library, rows in _libraries(adata).items():
        entry = adata.uns[SPATIAL][library]
        metadata = entry.get("metadata") or {}
        shapes, image = metadata.get(SHAPES), metadata.get(IMAGE)
        if shapes in sdata.shapes and "grid" not in metadata:  # the spots sdata holds
            column = metadata.get(INSTANCE)
            ids = adata.obs[column].to_numpy() if column in adata.obs else adata.obs_names[rows]
            region[rows], instance[rows] = shapes, np.asarray(ids)[rows]
            continue
        if image not in sdata.images:
            raise MissingKeyError(
                f"Section {library!r} names no image of sdata (spatialdata_image: {image!r}): "
                f"tile an image read with stmix.io.from_spatialdata, or pass that sdata."
            )
        system = metadata.get(SYSTEM)
        to_system = systems(sdata.images[image])[system]
        name = f"{key_added}_{library}"
        radius = float(entry["scalefactors"]["spot_diameter_fullres"]) / 2
        new[name] = ShapesModel.parse(
            np.asarray(adata.obsm[SPATIAL])[rows],
            geometry=0,
            radius=np.full(int(rows.sum()), radius),
            index=np.arange(int(rows.sum())),
            transformations={system: Affine(to_system, ("x", "y"), ("x", "y"))},
        )
        region[rows], instance[rows] = name, np.arange(int(rows.sum()))
    return {"region": region, "instance_id": np.asarray(instance.tolist())}, new


def _columns(matrix: Any, adata: ad.AnnData, genes: pd.Index) -> np.ndarray:
    """The ``genes`` columns of a layer, dense float32."""
    values = matrix[:, adata.var_names.get_indexer(genes)]
    values = values.toarray() if hasattr(values, "toarray") else np.asarray(values)
    return values.astype(np.float32)


def _libraries(adata: ad.AnnData) -> dict[str, np.ndarray]:
    """Each section's rows (one section: all)."""
    libraries = list(adata.uns.get(SPATIAL) or {})
    if not libraries:
        raise MissingKeyError("adata.uns['spatial'] is missing: where do these spots lie?")
    if len(libraries) == 1:
        return {libraries[0]: np.ones(adata.n_obs, dtype=bool)}
    column = next((c for c in ("library_id", "library") if c in adata.obs), None)
    if column is None:
        raise MissingKeyError("Several sections in uns['spatial'] and no obs['library_id'].")
    return {name: (adata.obs[column] == name).to_numpy() for name in libraries}


def _check_free(sdata: Any, key_added: str, shapes: dict) -> None:
    """Refuse a table, or shapes, of these names that stmix did not write."""
    held = sdata.tables.get(key_added) if key_added in sdata.tables else None
    if held is not None and (held.uns.get("stmix") or {}).get(_owner.WRITER) != WRITER:
        raise ValueError(
            f"sdata.tables[{key_added!r}] holds a table stmix did not write: pass another "
            f"key_added=."
        )
    for name in shapes:
        annotated = held is not None and name in (held.uns.get("spatialdata_attrs") or {}).get(
            "region", []
        )
        if name in sdata.shapes and not annotated:
            raise ValueError(
                f"sdata.shapes[{name!r}] holds shapes stmix did not write: pass another key_added=."
            )


def _on_disk(sdata: Any) -> set[str]:
    try:
        return {name.split("/")[-1] for name in sdata.elements_paths_on_disk()}
    except (AttributeError, ValueError):
        return set()
