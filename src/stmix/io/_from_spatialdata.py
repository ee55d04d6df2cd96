"""Sections out of a SpatialData object, as the AnnData that ``pp`` and ``tl`` take."""

from __future__ import annotations

import re
from typing import Any

import anndata as ad
import numpy as np

from stmix import _library
from stmix._keys import LIBRARY_KEY, SPATIAL
from stmix._slide import Slide, image_levels
from stmix.errors import MissingKeyError
from stmix.io._frames import (
    IMAGE,
    INSTANCE,
    SHAPES,
    SYSTEM,
    TABLE,
    apply,
    scale,
    spatialdata,
    systems,
)

#: spatialdata-io names Visium HD's bins by their side: ``square_008um``.
BIN_NAME = re.compile(r"(\d+)um")


def from_spatialdata(
    sdata: Any,
    table_key: str | None = None,
    image_key: str | None = None,
    *,
    spot_um: float | None = None,
    library_key: str = LIBRARY_KEY,
) -> ad.AnnData:
    """The spots of a SpatialData table, with their H&E image, as stmix takes them.

    The table must annotate shapes: circles (Visium's spots, as spatialdata-io writes them) or
    squares (Visium HD's bins). Each annotated shapes element is a section; its image is the one
    that shares a coordinate system with it (the finest, when several do). Spot centres are
    mapped through the SpatialData coordinate transformations into that image's pixels (whatever
    the affine between them), and the spot diameter (a bin's side) with them. The image is read
    lazily, region by region at the scale patches need: :func:`stmix.pp.patches` reopens it from
    the store when ``sdata`` was written to zarr, and takes ``image=sdata.images[...]``
    otherwise.

    Parameters
    ----------
    sdata
        A :class:`spatialdata.SpatialData`.
    table_key
        The table to read; default the only one.
    image_key
        The H&E image; default the one in the shapes' coordinate system.
    spot_um
        The spots' diameter (a bin's side) in µm, which gives the pixel size; default the size
        in the table's or shapes' name (``square_008um``: 8), else unknown.
    library_key
        The ``obs`` column that names each spot's section, with several.

    Returns
    -------
    anndata.AnnData
        The table's rows (expression, ``obs`` and ``var``), ``obsm["spatial"]`` in the image's
        full-resolution pixels and ``uns["spatial"][shapes]`` in the scanpy layout: ``hires`` and
        ``lowres`` from the image's coarse scales, ``spot_diameter_fullres``, and ``metadata``
        with ``source_image_path`` (the zarr store, when there is one), ``spatialdata_image``,
        ``spatialdata_shapes``, ``spatialdata_coordinate_system``, ``spatialdata_table``,
        ``spatialdata_instance_key`` and, with a known spot size, ``microns_per_pixel``.
    """
    spatialdata()
    table_key, table = _table(sdata, table_key)
    attrs = table.uns.get("spatialdata_attrs") or {}
    regions = attrs.get("region")
    regions = [regions] if isinstance(regions, str) else list(regions or [])
    region_key, instance_key = attrs.get("region_key"), attrs.get("instance_key")
    for region in regions:
        if region not in sdata.shapes:
            kind = next((k for k in ("labels", "points") if region in getattr(sdata, k)), None)
            what = f"the {kind} element {region!r}" if kind else f"{region!r}, which sdata lacks"
            raise MissingKeyError(
                f"Table {table_key!r} annotates {what}, not shapes: stmix reads spots as circles "
                f"or squares (shapes) annotated by a table."
            )
    if not regions:
        raise MissingKeyError(
            f"Table {table_key!r} annotates no shapes (no 'region' in its attrs)."
        )
    images = {region: _image_for(sdata, region, image_key) for region in regions}
    sections = {}
    for region in regions:
        rows = (
            (table.obs[region_key] == region).to_numpy()
            if region_key in table.obs
            else np.ones(table.n_obs, dtype=bool)
        )
        size_um = spot_um if spot_um is not None else _named_size(table_key, region)
        section = _section(sdata, table[rows], region, images[region], size_um)
        section.uns[SPATIAL][region]["metadata"].update(
            {TABLE: table_key, INSTANCE: str(instance_key)}
        )
        sections[region] = section
    if len(sections) == 1:
        return next(iter(sections.values()))
    from stmix.pp._concat import concat

    return concat(sections, library_key=library_key)


def _table(sdata: Any, table_key: str | None) -> tuple[str, ad.AnnData]:
    tables = dict(sdata.tables)
    if table_key is None:
        if len(tables) != 1:
            raise MissingKeyError(
                "Pass table_key=: sdata holds "
                + (f"the tables {sorted(tables)}." if tables else "no table.")
            )
        table_key = next(iter(tables))
    if table_key not in tables:
        raise MissingKeyError(f"sdata holds no table {table_key!r}; it holds {sorted(tables)}.")
    return table_key, tables[table_key]


def _image_for(sdata: Any, region: str, image_key: str | None) -> tuple[str, str, np.ndarray]:
    """The image of the shapes ``region``: name, shared coordinate system, shapes → pixels.

    Of the images in a coordinate system of the shapes, the one that holds most of the spots
    (sections side by side in one system), and of those the finest.
    """
    shape_systems = systems(sdata.shapes[region])
    names = [image_key] if image_key is not None else list(sdata.images)
    if image_key is not None and image_key not in sdata.images:
        raise MissingKeyError(
            f"sdata holds no image {image_key!r}; it holds {sorted(sdata.images)}."
        )
    shapes = sdata.shapes[region]
    centres = _geometry(shapes, region)[0]
    found = []
    for name in names:
        width, height = image_levels(sdata.images[name])[0].shape[:0:-1]
        for system, to_system in systems(sdata.images[name]).items():
            if system in shape_systems:
                to_pixels = np.linalg.inv(to_system) @ shape_systems[system]
                xy = apply(to_pixels, centres)
                inside = np.mean((xy >= 0).all(axis=1) & (xy[:, 0] < width) & (xy[:, 1] < height))
                found.append((-inside, scale(to_system), name, system, to_pixels))
    if not found:
        raise ValueError(
            f"The shapes {region!r} (coordinate systems {sorted(shape_systems)}) share no "
            f"coordinate system with "
            + (f"the image {image_key!r}." if image_key else f"any image ({sorted(names)}).")
        )
    # the image that holds the spots, and the finest of those
    _, _, name, system, to_pixels = min(found, key=lambda item: item[:2])
    return name, system, to_pixels


def _section(sdata, rows: ad.AnnData, region: str, image, size_um) -> ad.AnnData:
    name, system, to_pixels = image
    shapes = sdata.shapes[region]
    centres, diameters = _geometry(shapes, region)
    instance_key = (rows.uns.get("spatialdata_attrs") or {}).get("instance_key")
    ids = rows.obs[instance_key].to_numpy() if instance_key in rows.obs else rows.obs_names
    where = shapes.index.get_indexer(ids)
    if (where < 0).any():
        missing = list(np.asarray(ids)[where < 0][:3])
        raise MissingKeyError(
            f"{(where < 0).sum()} rows of the table name shapes that {region!r} does not hold, "
            f"e.g. {missing}."
        )
    adata = ad.AnnData(X=rows.X, obs=rows.obs.copy(), var=rows.var.copy(), layers=dict(rows.layers))
    adata.obsm[SPATIAL] = apply(to_pixels, centres[where])
    diameter = float(np.median(diameters[where])) * scale(to_pixels)
    slide = Slide.from_arrays(image_levels(sdata.images[name]), name)
    preview, _ = slide.thumbnail(_library.HIRES_SIDE)
    images, scalefactors = _library.images(preview, slide.size)
    scalefactors["spot_diameter_fullres"] = diameter
    width, height = slide.size
    metadata = {
        "full_resolution_shape": [int(height), int(width)],
        IMAGE: name,
        SHAPES: region,
        SYSTEM: system,
    }
    if getattr(sdata, "path", None) is not None:
        metadata["source_image_path"] = str(sdata.path)
    if size_um is not None:
        metadata["microns_per_pixel"] = float(size_um) / diameter
    adata.uns[SPATIAL] = {
        region: {"images": images, "scalefactors": scalefactors, "metadata": metadata}
    }
    return adata


def _geometry(shapes: Any, region: str) -> tuple[np.ndarray, np.ndarray]:
    """Centres (n, 2) and diameters of circles, or centres and sides of squares (polygons)."""
    kinds = set(shapes.geometry.geom_type)
    if kinds == {"Point"}:
        if "radius" not in shapes:
            raise ValueError(f"The shapes {region!r} are points without a 'radius': not spots.")
        centres = np.c_[shapes.geometry.x, shapes.geometry.y]
        return centres, 2 * shapes["radius"].to_numpy(dtype=np.float64)
    if kinds <= {"Polygon", "MultiPolygon"}:
        centroids = shapes.geometry.centroid
        return np.c_[centroids.x, centroids.y], np.sqrt(shapes.geometry.area.to_numpy())
    raise ValueError(f"The shapes {region!r} are {sorted(kinds)}: stmix reads circles or squares.")


def _named_size(*names: str) -> float | None:
    for name in names:
        found = BIN_NAME.search(str(name))
        if found:
            return float(found.group(1))
    return None
