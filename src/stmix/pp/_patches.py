"""Cutting the H&E patch under each spot."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from stmix import _anndata, _image, _memory, _options, _owner, _store, _validate
from stmix._docs import doc_params
from stmix._image import SpotImage
from stmix._keys import PATCHES, SPATIAL
from stmix._slide import Slide
from stmix.errors import InputTypeError, MissingKeyError
from stmix.pp import _regions

logger = logging.getLogger(__name__)

WRITER = "stmix.pp.patches"
#: Value of the parts of a patch that fall outside the image: white, like the glass around tissue.
FILL = 255


@doc_params
def patches(
    adata: ad.AnnData,
    size: int = 224,
    *,
    library_id: str | None = None,
    library_key: str | None = None,
    image: Any = None,
    img_key: str | None = None,
    spot_scale: float = 1.0,
    spot_diameter: float | None = None,
    side_um: float | None = None,
    mpp: float | None = None,
    store: str | os.PathLike | None = None,
    spatial_key: str = SPATIAL,
    key_added: str = PATCHES,
    progress: bool = True,
    copy: bool = False,
) -> ad.AnnData | None:
    """Cut the H&E patch centred on every spot.

    Each patch is a square of side ``spot_diameter_fullres * spot_scale`` full-resolution pixels
    centred on the spot, resampled (bicubic, antialiased) to ``size`` × ``size``. Parts of a
    patch beyond the image border are white. A spot whose centre lies outside the image is an
    error.

    The image is, in order of preference:

    1. ``image=``: an array (H, W[, 3]), a file path or a PIL image, all in the full-resolution
       frame of ``obsm[spatial_key]``, or a squidpy ``ImageContainer`` (its ``scale`` is honoured);
    2. the full-resolution file ``uns["spatial"][library_id]["metadata"]["source_image_path"]``;
    3. the images of ``uns["spatial"][library_id]["images"]`` (``hires``, then ``lowres``) with
       their ``tissue_<key>_scalef``. An image that is not RGB or does not cover the spots is
       skipped with a warning. ``img_key`` (``"source_image_path"``, ``"hires"``, ...) forces one.

    With several sections (``library_key``), each spot is cut from its own section's image and
    with its own section's spot diameter.

    Parameters
    ----------
    adata
        Spots with ``obsm[spatial_key]`` in full-resolution pixels (x, y).
    size
        Side of the stored patches in pixels.
    library_id
        Library of ``uns["spatial"]``, for an AnnData of one section whose ``uns["spatial"]``
        holds several.
    library_key
        {library_key}
    image
        An image to cut from instead of those stored with ``adata``; with several sections, a
        dict ``{library_id: image}`` (sections not in it use their stored images).
    img_key
        Use only this image of the library (see above).
    spot_scale
        Patch side as a multiple of the spot diameter.
    spot_diameter
        Spot diameter in full-resolution pixels; default
        ``uns["spatial"][library_id]["scalefactors"]["spot_diameter_fullres"]``.
    side_um
        Patch side in micrometres instead of ``spot_diameter * spot_scale``, so that a patch shows
        tissue at the scale an encoder was trained at (UNI, H-optimus, Virchow: 224 px at
        0.5 µm/px, i.e. ``side_um=112`` with ``size=224``).
    mpp
        Micrometres per full-resolution pixel, for ``side_um``; default the library's
        ``metadata["microns_per_pixel"]``.
    store
        Write the patches to this zarr store, block by block, and keep a lazy (dask) array in
        ``obsm``: memory does not grow with the number of spots. With several sections, a
        folder that gets one store per section (``<store>/<library_id>.zarr``). A complete store
        of the same patches is reused; one of other patches, or one cut short, is refused.
        :func:`stmix.tl.embed`, :func:`stmix.tl.fit` and :func:`stmix.tl.impute` read lazy
        patches in chunks (DataLoader workers). ``write_h5ad`` copies lazy patches into the
        file; ``del adata.obsm[key_added]`` first to keep it small: stmix reopens the store
        that ``uns[key_added]["params"]["store"]`` names.
    spatial_key
        {spatial_key}
    key_added
        Key of the patches in ``obsm`` and of their parameters in ``uns``.
    progress
        {progress}
    copy
        {copy}

    Returns
    -------
    anndata.AnnData or None
        ``None``, or a new AnnData when ``copy=True``; either way it holds

        - ``obsm[key_added]``: uint8 array (n_obs, size, size, 3);
        - ``uns[key_added]["params"]``: ``size``, ``spot_scale``, ``spot_diameter``,
          ``side_fullres`` (patch side in full-resolution pixels), ``side_source`` (in pixels of
          the image used), ``source`` and ``library_id``; with several sections the per-section
          values are under ``by_library``; with ``store``, its path (and each section's store
          and spot positions).
    """
    started = time.perf_counter()
    size = _check_size(size)
    spot_scale = _validate.number("spot_scale", spot_scale, above=0)
    spot_diameter = _validate.number("spot_diameter", spot_diameter, above=0, none=True)
    side_um = _validate.number("side_um", side_um, above=0, none=True)
    mpp = _validate.number("mpp", mpp, above=0, none=True)
    coords = _anndata.spatial_coordinates(adata, spatial_key)
    _owner.claim(adata, WRITER, key_added, [("obsm", key_added), ("uns", key_added)])
    key = _anndata.library_key(adata, library_key)
    jobs = _jobs(adata, key, library_id, image)

    if store is None:
        _memory.check_fits(
            adata.n_obs * size * size * 3,
            f"{adata.n_obs:,} patches of {size} × {size} px",
            f"lower {_options.name('size')}, or write them to disk with {_options.arg('store')}.",
        )
        out = np.empty((adata.n_obs, size, size, 3), dtype=np.uint8)
    records = {}
    bar = tqdm(total=adata.n_obs, desc="patches", unit="spot", disable=not progress, leave=False)
    for name, spots, source in jobs:
        spot_image, record = _section_image(
            adata,
            name,
            source,
            img_key,
            coords[spots],
            spots,
            size,
            spot_scale,
            spot_diameter,
            (side_um, mpp),
        )
        if store is None:  # written in place: no second copy of a slide's patches
            cut_patches(
                spot_image, coords[spots], record["side_fullres"], size, bar=bar, out=(out, spots)
            )
        else:
            path = Path(store) if key is None else Path(store) / f"{record['library_id']}.zarr"
            _to_store(path, spot_image, coords[spots], record, size, bar)
            record["store"], record["positions"] = str(path), np.asarray(spots)
        records[record["library_id"]] = record
        del spot_image  # a full-resolution slide is large: one at a time
    bar.close()

    params = _params(records, key, size, spot_scale, spatial_key, store, side_um)
    if store is not None:
        out = _store.lazy(adata.n_obs, records, size)
    adata = adata.copy() if copy else adata
    adata.obsm[key_added] = out
    adata.uns[key_added] = _owner.mark({"params": params}, WRITER)
    logger.info(
        "Cut %d patches of %d px from %d image(s) in %.2f s.",
        adata.n_obs,
        size,
        len(records),
        time.perf_counter() - started,
    )
    return adata if copy else None


def _to_store(path: Path, spot_image, coords, record, size, bar) -> None:
    """Cut one section's patches into ``path`` block by block, or reuse the same patches there."""
    meta = {
        "side_fullres": record["side_fullres"],
        "source": record["source"],
        "spot_diameter": record["spot_diameter"],
    }
    if path.exists():
        _store.open_lazy(path, size=size, n=len(coords))  # complete, same size and spots
        import zarr

        held = dict(zarr.open_array(str(path), mode="r").attrs[_store.ATTRIBUTE])
        if any(held.get(k) != v for k, v in meta.items()):
            raise ValueError(
                f"The patch store {path} holds other patches (cut from {held.get('source')}, "
                f"side {held.get('side_fullres')} px): pass another `store=` path."
            )
        logger.info("Reusing the patches in %s.", path)
        bar.update(len(coords))
        return
    _store.write(
        path,
        len(coords),
        size,
        lambda start, stop: cut_patches(
            spot_image, coords[start:stop], record["side_fullres"], size, bar=bar
        ),
        meta,
    )


def _jobs(adata: ad.AnnData, key: str | None, library_id, image) -> list[tuple]:
    """``(library_id, spot indices, image or None)`` of each section to cut."""
    if key is None:
        return [(library_id, np.arange(adata.n_obs), image)]
    if library_id is not None:
        raise ValueError(
            "`library_id` chooses the library of an AnnData of one section; with several "
            f"sections (library_key={key!r}) each is cut from its own image."
        )
    if image is not None and not isinstance(image, Mapping):
        raise InputTypeError(
            "With several sections, `image` must be a dict {library_id: image}, not a "
            f"{type(image).__name__}."
        )
    sections = _anndata.libraries(adata, key)
    unknown = sorted(set(image or {}) - set(sections))
    if unknown:
        raise MissingKeyError(f"`image` names sections that adata does not hold: {unknown}.")
    return [(name, spots, (image or {}).get(name)) for name, spots in sections.items()]


def _params(records: dict, key, size, spot_scale, spatial_key, store, side_um) -> dict:
    """``uns[key_added]["params"]``: the patch size and scale, each section's record."""
    params = {"size": size, "spot_scale": float(spot_scale), "spatial_key": spatial_key}
    if store is not None:
        params["store"] = str(store)
    if side_um is not None:
        params["side_um"] = side_um
        scales = [
            r["side_fullres"] / r["spot_diameter"] for r in records.values() if r["spot_diameter"]
        ]
        params["spot_scale"] = float(np.median(scales)) if scales else float("nan")
    if key is None:
        params.update(next(iter(records.values())))
        return params
    params["library_key"] = key
    params["library_id"] = list(records)
    diameters = {r["spot_diameter"] for r in records.values()}
    params["spot_diameter"] = diameters.pop() if len(diameters) == 1 else float("nan")
    params["by_library"] = records
    return params


def _section_image(
    adata, library_id, image, img_key, coords, spots, size, spot_scale, diameter, physical
):
    """The image one section's spots are cut from, checked, and what to record about it."""
    names = adata.obs_names[spots]
    side_um, mpp = physical
    entry = None
    if image is None or diameter is None or (side_um is not None and mpp is None):
        try:
            library_id, entry = _anndata.library(adata, library_id)
        except KeyError:
            if image is None:
                raise
            raise MissingKeyError(
                "adata.uns['spatial'] is missing, so the spot diameter is unknown: pass "
                f"{_options.arg('spot_diameter')} (in full-resolution pixels)."
            ) from None
    if side_um is not None and mpp is None:
        mpp = ((entry or {}).get("metadata") or {}).get("microns_per_pixel")
        if mpp is None:
            raise MissingKeyError(
                f"side_um needs the pixel size, and adata.uns['spatial'][{library_id!r}]"
                f"['metadata'] has no 'microns_per_pixel': pass {_options.arg('mpp')}."
            )
    if diameter is None and side_um is not None:
        diameter = ((entry or {}).get("scalefactors") or {}).get("spot_diameter_fullres")
    elif diameter is None:
        diameter = (entry.get("scalefactors") or {}).get("spot_diameter_fullres")
        if diameter is None:
            raise MissingKeyError(
                f"adata.uns['spatial'][{library_id!r}]['scalefactors'] has no "
                f"'spot_diameter_fullres'; pass {_options.arg('spot_diameter')} (full-resolution "
                f"pixels)."
            )
        diameter = _validate.number(
            f"uns['spatial'][{library_id!r}]['scalefactors']['spot_diameter_fullres']",
            diameter,
            above=0,
        )
    side = (
        float(side_um) / float(mpp) if side_um is not None else float(diameter) * float(spot_scale)
    )
    _anndata.check_distinct(coords, names)
    if image is not None:
        spot_image = _image.from_user(image, source_px=side, size=size)
        _check_inside(spot_image, coords, names)
    else:
        spot_image = _choose(entry, library_id, img_key, coords, names, side, size)
    width, height = (dim / spot_image.scale for dim in spot_image.size)
    if side > max(width, height):
        raise ValueError(
            f"A patch side of {side:.0f} px (spot diameter {diameter} × spot_scale "
            f"{spot_scale:g}, or side_um / mpp) is larger than the whole image "
            f"({width:.0f} × {height:.0f} full-resolution px): check "
            f"{_options.name('spot_diameter')} (full-resolution pixels) and `spot_scale`, or "
            f"`side_um`."
        )
    side_source = side * spot_image.scale
    if side_source < size / 2:
        logger.warning(
            "Patches are upsampled from %.1f to %d pixels (source: %s); pass the "
            "full-resolution image with `image=` for sharper patches.",
            side_source,
            size,
            spot_image.source,
        )
    record = {
        "spot_diameter": None if diameter is None else float(diameter),
        "side_fullres": side,
        "side_source": float(side_source),
        "source": spot_image.source,
        "library_id": "" if library_id is None else str(library_id),
    }
    return spot_image, record


def _check_size(size: int) -> int:
    return _validate.integer("size", size, minimum=8)


def _check_inside(spot_image: SpotImage, coords: np.ndarray, names) -> None:
    outside = spot_image.outside(coords)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        x, y = spot_image.locate(coords[first : first + 1])[0]
        width, height = spot_image.size
        raise ValueError(
            f"{outside.sum()} spots lie outside the {spot_image.source} ({width} × {height} px), "
            f"e.g. spot {names[first]!r} at ({x:.1f}, {y:.1f}) in that image's pixels. Check "
            f"obsm['spatial'] (full-resolution pixels) and the image's scale factor."
        )


def _choose(entry, library_id, img_key, coords, names, side, size) -> SpotImage:
    options = _image.candidates(entry, source_px=side, size=size)
    if img_key is not None:
        options = [(name, load) for name, load in options if name == img_key]
        if not options:
            raise MissingKeyError(
                f"No image {img_key!r} with a scale factor in adata.uns['spatial'][{library_id!r}]."
            )
    if not options:
        raise MissingKeyError(
            f"adata.uns['spatial'][{library_id!r}] has no usable image: no existing "
            f"metadata['source_image_path'] and no images with tissue_<key>_scalef. "
            f"Pass the image with `image=`."
        )
    problems = []
    for name, load in options:
        try:
            spot_image = load()
            _check_inside(spot_image, coords, names)
        except ValueError as error:
            problems.append((name, error))
            continue
        for skipped, error in problems:
            logger.warning("Not using the %r image: %s", skipped, error)
        return spot_image
    name, error = problems[0]
    if len(problems) == 1:
        raise error
    others = "; ".join(f"{n}: {e}" for n, e in problems[1:])
    raise ValueError(f"No image of library {library_id!r} fits the spots. {error} ({others})")


def cut_patches(
    spot_image: SpotImage,
    coords: np.ndarray,
    side: float,
    size: int,
    *,
    progress: bool = False,
    bar: tqdm | None = None,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Resample the square of side ``side`` (full-resolution px) around each spot to ``size``.

    Pixel ``(i, j)`` of an image covers ``[j, j + 1) × [i, i + 1)``, so a spot at full-resolution
    pixel index ``(x, y)`` is centred at ``(x + 0.5, y + 0.5)``, which lies at
    ``((x + 0.5) * scale, (y + 0.5) * scale)`` in a scaled image. The resampling box is placed at
    sub-pixel precision (PIL ``resize(box=...)``), so patches are not shifted by rounding. A
    whole-slide image is read region by region (:mod:`stmix.pp._regions`). ``out=(array, rows)``
    writes spot ``k``'s patch into ``array[rows[k]]`` (and returns ``array``).
    """
    if out is None:
        out = (np.empty((len(coords), size, size, 3), dtype=np.uint8), np.arange(len(coords)))
    own = bar is None
    if own:
        bar = tqdm(
            total=len(coords), desc="patches", unit="spot", disable=not progress, leave=False
        )
    if isinstance(spot_image.image, Slide):
        _regions.cut(spot_image, coords, side, size, resample, bar.update, out)
    else:
        _cut_in_memory(spot_image, coords, side, size, bar, out)
    if own:
        bar.close()
    return out[0]


def _cut_in_memory(spot_image: SpotImage, coords, side, size, bar: tqdm, out) -> None:
    image = spot_image.image
    width, height = image.size
    centres = spot_image.locate(coords + 0.5)
    side_px = side * spot_image.scale
    margin = int(np.ceil(2 * max(side_px / size, 1.0))) + 1
    array, rows = out
    for k, (cx, cy) in enumerate(centres):
        left, top = cx - side_px / 2, cy - side_px / 2
        box = (left, top, left + side_px, top + side_px)
        if left >= 0 and top >= 0 and box[2] <= width and box[3] <= height:
            array[rows[k]] = resample(image, box, size)
        else:
            array[rows[k]] = resample(_padded(image, box, margin), _shift(box, margin), size)
        bar.update()


def resample(image: Image.Image, box: tuple[float, ...], size: int) -> np.ndarray:
    """The ``box`` of ``image`` resampled to ``size`` × ``size`` (bicubic, antialiased).

    PIL resamples only the box and the filter's support around it, not the whole image.
    """
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC, box=box))


def _padded(image: Image.Image, box: tuple[float, ...], margin: int) -> Image.Image:
    """The window around ``box`` (plus ``margin``) with what lies beyond the image set to white."""
    x0, y0 = int(np.floor(box[0])) - margin, int(np.floor(box[1])) - margin
    x1, y1 = int(np.ceil(box[2])) + margin, int(np.ceil(box[3])) + margin
    window = Image.new("RGB", (x1 - x0, y1 - y0), (FILL, FILL, FILL))
    width, height = image.size
    inner = (max(x0, 0), max(y0, 0), min(x1, width), min(y1, height))
    if inner[0] < inner[2] and inner[1] < inner[3]:
        window.paste(image.crop(inner), (inner[0] - x0, inner[1] - y0))
    return window


def _shift(box: tuple[float, ...], margin: int) -> tuple[float, ...]:
    """``box`` in the frame of the window :func:`_padded` cut around it."""
    x0, y0 = np.floor(box[0]) - margin, np.floor(box[1]) - margin
    return (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
