"""Pseudo-spots on a grid over an H&E slide: in-silico spatial transcriptomics."""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from PIL import Image

from stmix import _anndata, _image, _library, _options, _slide, _tissue, _validate
from stmix._keys import SPATIAL
from stmix._library import HIRES_SIDE
from stmix.errors import InputTypeError, MissingKeyError

logger = logging.getLogger(__name__)

GRIDS = ("hexagonal", "square")


def tile(
    image: str | os.PathLike | np.ndarray | Image.Image | ad.AnnData,
    *,
    spot_diameter: float | None = None,
    spacing: float | None = None,
    mpp: float | str | None = None,
    grid: str = "hexagonal",
    tissue: str | np.ndarray = "auto",
    points: np.ndarray | None = None,
    all_spots: bool = False,
    library_id: str | None = None,
) -> ad.AnnData:
    """A new AnnData of pseudo-spots on a regular grid over the tissue of an H&E slide.

    The grid can match the measured spots of a platform (Visium: 55 µm spots, 100 µm apart on a
    hexagonal grid; the original ST array: 100 µm spots, 200 µm apart on a square grid) or be
    denser than any platform, for super-resolution maps. The result goes through
    :func:`stmix.pp.patches` (or :func:`stmix.tl.embed`) as any section does; having no genes,
    it is predicted with :func:`stmix.tl.predict`, whose AnnData opens in ``sc.pl.spatial``,
    :func:`stmix.pl.maps` and squidpy.

    Parameters
    ----------
    image
        An image file: a JPEG or PNG (decoded once, at reduced size where JPEG allows, for the
        tissue mask and the stored images) or a whole-slide image (SVS, NDPI, a tiled, OME or
        flat TIFF: only a low-resolution level is read here); :func:`stmix.pp.patches` reads the
        file itself, region by region for a slide. Or an RGB array or PIL image, or an AnnData
        whose section's image to tile (its ``uns["spatial"]`` library; its spot diameter and
        pixel size are the defaults).
    spot_diameter
        Diameter of a pseudo-spot: in pixels of the full-resolution image, or in µm with
        ``mpp``. Default: the AnnData's ``spot_diameter_fullres``; needed otherwise.
    spacing
        Centre-to-centre distance of neighbouring pseudo-spots, in the unit of
        ``spot_diameter``; default twice the diameter (the ST array; Visium: 100 / 55 times).
    mpp
        Micrometres per pixel of the full-resolution image (level 0 of a slide). When given,
        ``spot_diameter`` and ``spacing`` are in micrometres. ``"slide"``: the pixel size the
        file records (a slide's metadata: Aperio's ``MPP``, TIFF resolution tags, OME's
        ``PhysicalSizeX``; an AnnData's ``microns_per_pixel``), sizes in micrometres.
    grid
        ``"hexagonal"`` (rows offset by half a spacing, Visium-like) or ``"square"``.
    tissue
        ``"auto"``: regions that are both textured and stained (the local grey-level spread and
        the saturation each pass Otsu's threshold on a thumbnail; smooth glass is left out
        whatever its tint); ``"all"``: the whole image; or a
        boolean mask at any resolution (stretched over the image).
    points
        Spot centres (n, 2) in full-resolution pixels (x, y) instead of a grid, e.g. another
        platform's positions; all of them inside the image are kept (``obs["in_tissue"]`` still
        says which lie on the tissue).
    all_spots
        Keep the grid points off the tissue too (``obs["in_tissue"]`` 0 for them).
    library_id
        Name of the slide in ``uns["spatial"]``; default the file's stem (or ``"slide"``).

    Returns
    -------
    anndata.AnnData
        No genes (``n_vars == 0``); ``obsm["spatial"]`` (pseudo-spot centres in full-resolution
        pixels), ``obs["in_tissue"]``, ``obs["array_row"]`` / ``obs["array_col"]`` (grid
        indices; Visium's doubled columns on a hexagonal grid) and ``uns["spatial"][library_id]``
        in the scanpy layout: ``images["hires"]`` / ``images["lowres"]``, ``scalefactors``
        (``tissue_hires_scalef``, ``tissue_lowres_scalef``, ``spot_diameter_fullres``,
        ``spacing_fullres``) and ``metadata`` (``source_image_path`` for a file,
        ``microns_per_pixel``, ``grid``).
    """
    _validate.choice("grid", grid, GRIDS)
    if not isinstance(mpp, str):
        mpp = _validate.number("mpp", mpp, above=0, none=True)
    else:
        _validate.choice("mpp", mpp, ("slide",))
    slide = _Slide.open(image, library_id)
    if mpp == "slide":
        mpp = slide.recorded_mpp()

    def pixels(value: float) -> float:  # sizes are in µm exactly when `mpp` is passed
        return value / mpp if mpp is not None else value

    if spot_diameter is None:
        if slide.diameter is None:
            raise ValueError(
                f"The spot diameter is unknown: pass {_options.arg('spot_diameter')} (in "
                f"full-resolution pixels, or in µm together with {_options.arg('mpp')}), e.g. the "
                "diameter of the model's training spots (model.config.spot_diameter_px)."
            )
        diameter_px = float(slide.diameter)
    else:
        diameter_px = pixels(_validate.number("spot_diameter", spot_diameter, above=0))
    if spacing is None:
        spacing_px = 2.0 * diameter_px
    else:
        spacing_px = pixels(_validate.number("spacing", spacing, above=0))
    recorded_mpp = mpp if mpp is not None else slide.mpp
    width, height = slide.size
    if diameter_px >= min(width, height):
        raise ValueError(
            f"A spot diameter of {diameter_px:.0f} px does not fit the {width} × {height} px "
            f"image; check {_options.name('spot_diameter')} (pixels, or µm with "
            f"{_options.name('mpp')})."
        )

    mask = _tissue_mask(slide, tissue)
    if points is not None:
        xy = np.asarray(points, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2 or not np.isfinite(xy).all():
            raise ValueError(f"`points` must be finite (n, 2) x, y positions, not {xy.shape}.")
        row, col = np.arange(len(xy)), np.zeros(len(xy), dtype=int)
    else:
        xy, row, col = _grid(width, height, diameter_px, spacing_px, grid)
    inside = (xy[:, 0] >= 0) & (xy[:, 1] >= 0) & (xy[:, 0] < width) & (xy[:, 1] < height)
    on_tissue = inside & _on(mask, xy, width, height)
    if not on_tissue.any():
        raise ValueError(
            "No tissue was found under any pseudo-spot: the image has no textured, stained "
            f"region (a blank or glass-only slide?). Pass {_options.arg('tissue', 'all')}"
            + (
                f", or a boolean mask with {_options.arg('tissue')}."
                if _options.from_python()
                else "."
            )
        )
    keep = inside if all_spots or points is not None else on_tissue  # given points are kept
    names = [f"{r}x{c}" for r, c in zip(row[keep], col[keep], strict=True)]
    adata = ad.AnnData(
        obs=pd.DataFrame(
            {
                "in_tissue": on_tissue[keep].astype(int),
                "array_row": row[keep],
                "array_col": col[keep],
            },
            index=pd.Index(names, dtype=str),
        )
    )
    adata.obsm[SPATIAL] = xy[keep]
    adata.uns[SPATIAL] = {slide.name: slide.entry(diameter_px, spacing_px, recorded_mpp, grid)}
    logger.info(
        "Tiled %s: %d pseudo-spots of %.0f px on tissue (%d grid points).",
        slide.name,
        int(on_tissue.sum()),
        diameter_px,
        int(inside.sum()),
    )
    return adata


class _Slide:
    """The image to tile: a small RGB view of it, its full size and where it lives."""

    def __init__(self, name, preview, scale, size, path=None, full=None, diameter=None, mpp=None):
        self.name = name
        self.preview = preview  # uint8 RGB, the whole slide at `scale` of full resolution
        self.scale = scale
        self.size = size  # full-resolution (width, height)
        self.path = path  # a file pp.patches reads at full resolution
        self.full = full  # an in-memory full-resolution array (when there is no file)
        self.diameter = diameter  # spot diameter in full-resolution pixels, when known
        self.mpp = mpp
        self.kept: dict = {}  # metadata the grid keeps from its section (a SpatialData source)

    @classmethod
    def open(cls, image: Any, library_id: str | None) -> _Slide:
        if isinstance(image, ad.AnnData):
            return cls._from_adata(image, library_id)
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            size = _image.image_size(path)
            wsi = _image.open_slide(path)
            name = library_id or path.stem.removesuffix(".ome")
            if wsi is not None:  # only a low-resolution level is read
                preview, scale = wsi.thumbnail(HIRES_SIDE)
                return cls(name, preview, scale, wsi.size, path=path, mpp=wsi.mpp)
            reduce = max(1, math.ceil(max(size) / HIRES_SIDE))
            preview, scale = _image.read_image(path, reduce=min(reduce, 8))
            return cls(name, np.asarray(preview), scale, size, path=path)
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        if isinstance(image, np.ndarray):
            full = _image.as_uint8_rgb(image, "image")
            return cls(library_id or "slide", full, 1.0, (full.shape[1], full.shape[0]), full=full)
        raise InputTypeError(
            f"`image` must be a file path, an array, a PIL image or an AnnData, not "
            f"{type(image).__name__}."
        )

    @classmethod
    def _from_adata(cls, adata: ad.AnnData, library_id: str | None) -> _Slide:
        name, entry = _anndata.library(adata, library_id)
        scalefactors = entry.get("scalefactors") or {}
        metadata = entry.get("metadata") or {}
        diameter = scalefactors.get("spot_diameter_fullres")
        mpp = metadata.get("microns_per_pixel")
        path = metadata.get("source_image_path")
        if _image.source_exists(entry) and metadata.get(_image.SPATIALDATA_IMAGE):
            wsi = _image.open_source(entry, source_px=1.0, size=1).image  # a SpatialData image
            preview, scale = wsi.thumbnail(HIRES_SIDE)
            slide = cls(name, preview, scale, wsi.size, path=path, diameter=diameter, mpp=mpp)
            slide.kept = {k: v for k, v in metadata.items() if k.startswith("spatialdata_")}
            return slide
        if _image.source_exists(entry):
            slide = cls.open(str(path), name)
            slide.diameter, slide.mpp = diameter, mpp
            return slide
        if path:
            warnings.warn(
                f"The full-resolution image of {name!r} ({path}) is not there; the grid is laid "
                f"over the stored low-resolution image instead. Set "
                f"adata.uns['spatial'][{name!r}]['metadata']['source_image_path'] to the image's "
                f"place for full-resolution patches.",
                UserWarning,
                stacklevel=3,
            )
        for key in ("hires", "lowres"):
            if key in (entry.get("images") or {}) and f"tissue_{key}_scalef" in scalefactors:
                preview = _image.as_uint8_rgb(entry["images"][key], f"image {key!r}")
                scale = float(scalefactors[f"tissue_{key}_scalef"])
                size = (round(preview.shape[1] / scale), round(preview.shape[0] / scale))
                return cls(name, preview, scale, size, diameter=diameter, mpp=mpp)
        raise MissingKeyError(f"adata.uns['spatial'][{name!r}] holds no image to tile.")

    def recorded_mpp(self) -> float:
        """The pixel size the image records, or a clear error naming ``mpp``."""
        if self.mpp is None:
            source = self.path if self.path is not None else "the image"
            raise ValueError(
                f"{source} records no pixel size (no slide metadata, resolution tags or "
                f"microns_per_pixel): {_slide.mpp_help()}."
            )
        return float(self.mpp)

    def entry(self, diameter: float, spacing: float, mpp: float | None, grid: str) -> dict:
        """The slide's ``uns["spatial"]`` library in the scanpy layout."""
        width, height = self.size
        images, scalefactors = _library.images(self.preview, self.size)
        scalefactors.update(spot_diameter_fullres=float(diameter), spacing_fullres=float(spacing))
        metadata = {"grid": grid, "full_resolution_shape": [int(height), int(width)], **self.kept}
        if self.path is not None:
            metadata["source_image_path"] = str(Path(self.path).resolve())
        elif self.full is not None and self.scale == 1.0 and max(width, height) > HIRES_SIDE:
            images["fullres"] = self.full  # no file to read it from: keep it
            scalefactors["tissue_fullres_scalef"] = 1.0
        if mpp is not None:
            metadata["microns_per_pixel"] = float(mpp)
        return {"images": images, "scalefactors": scalefactors, "metadata": metadata}


def _grid(width, height, diameter, spacing, grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spot centres covering the image, with their grid row and column."""
    radius = diameter / 2
    if grid == "square":
        xs = np.arange(radius, width - radius + 1e-9, spacing)
        ys = np.arange(radius, height - radius + 1e-9, spacing)
        col, row = np.meshgrid(np.arange(len(xs)), np.arange(len(ys)))
        x, y = xs[col.ravel()], ys[row.ravel()]
        return np.c_[x, y], row.ravel(), col.ravel()
    step_y = spacing * math.sqrt(3) / 2
    rows = np.arange(radius, height - radius + 1e-9, step_y)
    centres, row_index, col_index = [], [], []
    for r, y in enumerate(rows):
        shift = spacing / 2 if r % 2 else 0.0
        xs = np.arange(radius + shift, width - radius + 1e-9, spacing)
        centres.append(np.c_[xs, np.full(len(xs), y)])
        row_index.append(np.full(len(xs), r))
        col_index.append(2 * np.arange(len(xs)) + (r % 2))  # Visium's doubled columns
    return np.concatenate(centres), np.concatenate(row_index), np.concatenate(col_index)


def _tissue_mask(slide: _Slide, tissue) -> np.ndarray | None:
    """Boolean mask over the preview (or the given mask); ``None`` for the whole image."""
    if isinstance(tissue, str):
        _validate.choice("tissue", tissue, ("auto", "all"))
        if tissue == "all":
            return None
        return _tissue.detect(slide.preview)
    mask = np.asarray(tissue)
    if mask.ndim != 2 or mask.dtype != bool:
        raise ValueError(
            f"A `tissue` mask must be a 2-D boolean array, not {mask.dtype} {mask.shape}."
        )
    width, height = slide.size
    rows, cols = mask.shape
    # a mask at any resolution is stretched over the image, but not to another shape: its sides'
    # ratio within 10% of the image's
    if abs(math.log((cols / rows) / (width / height))) > math.log(1.1):
        turned = abs(math.log((rows / cols) / (width / height))) <= math.log(1.1)
        raise ValueError(
            f"The `tissue` mask is {rows} × {cols} (rows × columns), not the shape of the "
            f"{height} × {width} px image at any scale"
            + (": it is transposed; pass mask.T." if turned else ".")
        )
    return mask


def _on(mask: np.ndarray | None, xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Whether each centre lies on the mask (stretched over the full-resolution image)."""
    if mask is None:
        return np.ones(len(xy), dtype=bool)
    rows = np.clip((xy[:, 1] / height * mask.shape[0]).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip((xy[:, 0] / width * mask.shape[1]).astype(int), 0, mask.shape[1] - 1)
    return mask[rows, cols]
