"""Whole-slide images and folders as users have them, written from the real HER2ST images.

Used by the tests and by ``benchmarks/wsi.py``; nothing here is committed output. Each writer
lays the file out as the tools that make such files in practice do:

- ``"aperio"``: an Aperio SVS (level 0 tiled, a stripped thumbnail as the second page, then the
  lower levels, a label and a macro image; ``MPP = ...`` in the description);
- ``"generic"``: a generic tiled pyramid with its levels as pages in sequence and the pixel size
  in the resolution tags, as ``vips tiffsave --pyramid`` writes it (OpenSlide's generic TIFF);
- ``"ome"``: an OME-TIFF pyramid (levels as SubIFDs, ``PhysicalSizeX`` in the OME-XML);
- ``"flat"``: one level in strips, no pyramid (Visium's full-resolution TIFF).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

TILE = 256
FLAVOURS = ("aperio", "generic", "ome", "flat")


def pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """``image`` and its 2×-reductions (box filter, as scanners and vips make them)."""
    out = [image]
    for _ in range(levels - 1):
        out.append(np.asarray(Image.fromarray(out[-1]).reduce(2)))
    return out


def write_slide(
    path: str | Path,
    image: np.ndarray,
    *,
    mpp: float | None,
    flavour: str = "generic",
    levels: int = 3,
    quality: int = 90,
) -> Path:
    """Write ``image`` (level 0, uint8 RGB) as a whole-slide image of ``flavour``."""
    arrays = pyramid(image, 1 if flavour == "flat" else levels)
    return write_levels(
        path,
        [(a.shape[0], a.shape[1]) for a in arrays],
        lambda level: _tiles(arrays[level]),
        mpp=mpp,
        flavour=flavour,
        quality=quality,
        thumbnail=arrays[-1],
    )


def write_levels(
    path: str | Path,
    shapes: list[tuple[int, int]],
    tiles: Callable[[int], Iterator[np.ndarray]],
    *,
    mpp: float | None,
    flavour: str,
    quality: int = 90,
    thumbnail: np.ndarray | None = None,
) -> Path:
    """Write a pyramid whose level ``k`` (``shapes[k]``: rows, columns) comes tile by tile.

    ``tiles(k)`` yields the 256 × 256 tiles of level ``k`` row by row (edge tiles padded), so
    a slide larger than memory is written with one tile in memory.
    """
    path = Path(path)
    height, width = shapes[0]
    jpeg = {"compression": "jpeg", "compressionargs": {"level": quality}, "photometric": "rgb"}
    common = {"dtype": np.uint8, "tile": (TILE, TILE), "metadata": None, **jpeg}
    if flavour == "flat":
        array = np.concatenate(list(_untile(tiles(0), shapes[0])), axis=0)
        tifffile.imwrite(
            path, array, photometric="rgb", rowsperstrip=64, metadata=None, **_resolution(mpp)
        )
        return path
    with tifffile.TiffWriter(path, bigtiff=True, ome=flavour == "ome") as tif:
        if flavour == "aperio":
            description = (
                f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] "
                f"({TILE}x{TILE}) JPEG/RGB Q={quality}|AppMag = 40"
                + (f"|MPP = {mpp}" if mpp is not None else "")
            )
            tif.write(tiles(0), shape=(*shapes[0], 3), description=description, **common)
            small = _fit(thumbnail, 768)
            tif.write(small, description=f"{description}\r\n-> thumbnail", photometric="rgb")
            for level, shape in enumerate(shapes[1:], start=1):
                tif.write(tiles(level), shape=(*shape, 3), description=description, **common)
            for name, side in (("label", 387), ("macro", 1280)):
                tif.write(
                    _fit(thumbnail, side),
                    description=f"Aperio Image Library v12.0.15\r\n{name} {side}x{side}",
                    photometric="rgb",
                    subfiletype=1 if name == "label" else 9,
                )
        elif flavour == "generic":
            for level, shape in enumerate(shapes):
                scale = shape[1] / width
                tif.write(
                    tiles(level),
                    shape=(*shape, 3),
                    subfiletype=0 if level == 0 else 1,
                    **_resolution(None if mpp is None else mpp / scale),
                    **common,
                )
        elif flavour == "ome":
            metadata = {"axes": "YXS"}
            if mpp is not None:
                metadata.update(PhysicalSizeX=mpp, PhysicalSizeY=mpp)
            tif.write(
                tiles(0),
                shape=(*shapes[0], 3),
                subifds=len(shapes) - 1,
                **{**common, "metadata": metadata},
            )
            for level, shape in enumerate(shapes[1:], start=1):
                tif.write(tiles(level), shape=(*shape, 3), subfiletype=1, **common)
        else:
            raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")
    return path


def _resolution(mpp: float | None) -> dict:
    if mpp is None:
        return {}
    return {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}


def _fit(image: np.ndarray, side: int) -> np.ndarray:
    thumb = Image.fromarray(image)
    thumb.thumbnail((side, side))
    return np.asarray(thumb)


def _tiles(array: np.ndarray) -> Iterator[np.ndarray]:
    height, width = array.shape[:2]
    for top in range(0, height, TILE):
        for left in range(0, width, TILE):
            tile = np.full((TILE, TILE, 3), 255, dtype=np.uint8)
            part = array[top : top + TILE, left : left + TILE]
            tile[: part.shape[0], : part.shape[1]] = part
            yield tile


def _untile(tiles: Iterator[np.ndarray], shape: tuple[int, int]) -> Iterator[np.ndarray]:
    """Rows of tiles back to strips of the image (for the flat layout)."""
    height, width = shape
    across = -(-width // TILE)
    row: list[np.ndarray] = []
    top = 0
    for tile in tiles:
        row.append(tile)
        if len(row) == across:
            strip = np.concatenate(row, axis=1)[: min(TILE, height - top), :width]
            yield strip
            top += TILE
            row = []


def write_montage(
    path: str | Path,
    sections: list[tuple[Image.Image, float]],
    *,
    size: tuple[int, int],
    mpp: float,
    flavour: str = "aperio",
    levels: int | None = None,
    quality: int = 80,
) -> tuple[Path, list[tuple[float, float, float]]]:
    """A slide of ``size`` (width, height) px at ``mpp`` with ``sections`` laid out on glass.

    ``sections`` are (image, its µm per pixel); each is rescaled to ``mpp`` and placed in a grid
    of rows filling the slide, white between. Tiles are rendered as they are written, so memory
    is the sections' decoded images, whatever the slide's size. Returns the path and, per
    section, ``(x0, y0, scale)``: where its pixel (0, 0) lands on level 0 and its rescaling.
    """
    width, height = size
    per_row = math.ceil(math.sqrt(len(sections) * width / height))
    rows = math.ceil(len(sections) / per_row)
    cell_w, cell_h = width / per_row, height / rows
    placed = []
    for k, (image, source_mpp) in enumerate(sections):
        scale = source_mpp / mpp
        w, h = image.size[0] * scale, image.size[1] * scale
        if w > cell_w or h > cell_h:
            raise ValueError(f"section {k} ({w:.0f} × {h:.0f} px) does not fit its cell")
        col, row = k % per_row, k // per_row
        placed.append((col * cell_w + (cell_w - w) / 2, row * cell_h + (cell_h - h) / 2, scale))
    if levels is None:
        levels = max(1, math.ceil(math.log2(max(size) / 2000)) + 1)
    shapes = [(math.ceil(height / 2**k), math.ceil(width / 2**k)) for k in range(levels)]

    def tiles(level: int) -> Iterator[np.ndarray]:
        rows_k, cols_k = shapes[level]
        factor = 2**level
        for top in range(0, rows_k, TILE):
            for left in range(0, cols_k, TILE):
                tile = Image.new("RGB", (TILE, TILE), (255, 255, 255))
                for (image, _), (x0, y0, scale) in zip(sections, placed, strict=True):
                    _paste(tile, image, (left, top), factor, (x0, y0, scale))
                yield np.asarray(tile)

    thumbnail = np.asarray(Image.new("RGB", (shapes[-1][1], shapes[-1][0]), (255, 255, 255)))
    write_levels(
        path, shapes, tiles, mpp=mpp, flavour=flavour, quality=quality, thumbnail=thumbnail
    )
    return Path(path), placed


def _paste(tile, image, corner, factor, placement) -> None:
    """Draw the part of ``image`` that falls on the tile at ``corner`` of a level ``factor``."""
    left, top = corner
    x0, y0, scale = placement
    # the section's extent in this level's pixels
    sx0, sy0 = x0 / factor, y0 / factor
    sx1, sy1 = sx0 + image.size[0] * scale / factor, sy0 + image.size[1] * scale / factor
    ix0, iy0 = max(left, math.floor(sx0)), max(top, math.floor(sy0))
    ix1, iy1 = min(left + TILE, math.ceil(sx1)), min(top + TILE, math.ceil(sy1))
    if ix0 >= ix1 or iy0 >= iy1:
        return
    per_pixel = factor / scale  # source pixels per pixel of this level
    box = (
        max(0.0, (ix0 - sx0) * per_pixel),
        max(0.0, (iy0 - sy0) * per_pixel),
        min(image.size[0], (ix1 - sx0) * per_pixel),
        min(image.size[1], (iy1 - sy0) * per_pixel),
    )
    part = image.resize((ix1 - ix0, iy1 - iy0), Image.Resampling.BILINEAR, box=box)
    tile.paste(part, (ix0 - left, iy0 - top))


def write_space_ranger(outs: str | Path, adata, library_id: str) -> Path:
    """A Space Ranger ``outs/`` folder of a section (raw counts in ``X``), as Space Ranger 2+.

    ``filtered_feature_bc_matrix.h5`` (10x's HDF5 layout), ``spatial/tissue_positions.csv``
    (with its header), ``spatial/scalefactors_json.json`` and the ``hires`` / ``lowres`` PNGs
    from the section's ``uns["spatial"]``.
    """
    import json

    import h5py
    import pandas as pd
    from scipy import sparse

    outs = Path(outs)
    (outs / "spatial").mkdir(parents=True, exist_ok=True)
    counts = sparse.csr_matrix(adata.X).astype(np.int32)
    with h5py.File(outs / "filtered_feature_bc_matrix.h5", "w") as f:
        f.attrs["library_ids"] = np.array([library_id], dtype="S")
        f.attrs["chemistry_description"] = b"Spatial 3' v1"
        f.attrs["software_version"] = b"spaceranger-2.1.0"
        f.attrs["filetype"] = b"matrix"
        f.attrs["version"] = 2
        matrix = f.create_group("matrix")
        matrix["barcodes"] = np.array(adata.obs_names, dtype="S")
        matrix["data"], matrix["indices"], matrix["indptr"] = (
            counts.data,
            counts.indices.astype(np.int64),
            counts.indptr.astype(np.int64),
        )
        matrix["shape"] = np.array([adata.n_vars, adata.n_obs], dtype=np.int32)
        features = matrix.create_group("features")
        features["id"] = np.array([f"ENSG{i:011d}" for i in range(adata.n_vars)], dtype="S")
        features["name"] = np.array(adata.var_names, dtype="S")
        features["feature_type"] = np.array(["Gene Expression"] * adata.n_vars, dtype="S")
        features["genome"] = np.array(["GRCh38"] * adata.n_vars, dtype="S")
        features["_all_tag_keys"] = np.array([b"genome"])
    entry = adata.uns["spatial"][library_id]
    x, y = adata.obsm["spatial"].T
    pd.DataFrame(
        {
            "barcode": adata.obs_names,
            "in_tissue": 1,
            "array_row": adata.obs["array_row"].to_numpy(),
            "array_col": adata.obs["array_col"].to_numpy(),
            "pxl_row_in_fullres": np.round(y).astype(int),
            "pxl_col_in_fullres": np.round(x).astype(int),
        }
    ).to_csv(outs / "spatial" / "tissue_positions.csv", index=False)
    scalefactors = {k: float(v) for k, v in entry["scalefactors"].items()}
    scalefactors["fiducial_diameter_fullres"] = scalefactors["spot_diameter_fullres"] * 1.6
    (outs / "spatial" / "scalefactors_json.json").write_text(json.dumps(scalefactors))
    for key in ("hires", "lowres"):
        Image.fromarray(entry["images"][key]).save(outs / "spatial" / f"tissue_{key}_image.png")
    return outs


def write_hest(root: str | Path, sample: str, adata, wsi: Path, *, mpp: float) -> None:
    """One HEST-1k sample: ``st/<id>.h5ad``, ``wsis/<id>.tif`` (a copy of ``wsi``) and
    ``metadata/<id>.json`` with the keys HEST-1k writes (pixel size, spot size in µm, ...).

    ``adata``'s ``obsm["spatial"]`` must be in the pixels of ``wsi``.
    """
    import json
    import shutil

    import anndata as ad

    root = Path(root)
    for folder in ("st", "wsis", "metadata"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    st = ad.AnnData(X=adata.X, obs=adata.obs[["array_row", "array_col"]].copy(), var=adata.var)
    st.obsm["spatial"] = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    st.obs["pxl_col_in_fullres"], st.obs["pxl_row_in_fullres"] = st.obsm["spatial"].T
    st.write_h5ad(root / "st" / f"{sample}.h5ad")
    shutil.copy(wsi, root / "wsis" / f"{sample}.tif")
    from stmix._slide import Slide

    width, height = Slide.open(wsi).size
    metadata = {
        "pixel_size_um_embedded": mpp,
        "pixel_size_um_estimated": mpp,
        "spot_diameter": 100.0,
        "inter_spot_dist": 200.0,
        "st_technology": "Spatial Transcriptomics",
        "species": "Homo sapiens",
        "organ": "Breast",
        "oncotree_code": "IDC",
        "spots_under_tissue": int(adata.n_obs),
        "fullres_height": height,
        "fullres_width": width,
    }
    (root / "metadata" / f"{sample}.json").write_text(json.dumps(metadata))
