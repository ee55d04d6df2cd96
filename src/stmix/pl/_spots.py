"""Drawing spots, at their true size, over the H&E image."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PatchCollection
from matplotlib.colors import Normalize
from matplotlib.patches import Circle

from stmix import _anndata
from stmix._image import as_uint8_rgb, read_image
from stmix._keys import SPATIAL

logger = logging.getLogger(__name__)


@dataclass
class Canvas:
    """Where the spots go: positions and radius in the pixels of ``image`` (if any)."""

    xy: np.ndarray
    radius: float
    image: np.ndarray | None
    extent: tuple[float, float, float, float]  # left, right, bottom, top in image pixels


def canvas(
    adata: ad.AnnData,
    *,
    library_id: str | None = None,
    img: bool = True,
    img_key: str | None = None,
    spatial_key: str = SPATIAL,
    spot_size: float = 1.0,
    margin: float = 1.5,
) -> Canvas:
    """Spot positions in the pixels of the best plotting image, cropped around the spots.

    The image is ``hires`` (else ``lowres``, else the full-resolution file read at reduced size);
    images that are not RGB or do not cover the spots are skipped. Without an image (or with
    ``img=False``) positions stay in full-resolution pixels.
    """
    coords = _anndata.spatial_coordinates(adata, spatial_key)
    diameter, image, scale = _diameter(coords), None, 1.0
    try:
        library_id, entry = _anndata.library(adata, library_id)
    except KeyError:
        entry = None
    if entry is not None:
        diameter = float((entry.get("scalefactors") or {}).get("spot_diameter_fullres", diameter))
        if img:
            image, scale = _background(entry, coords, img_key)
    xy = coords * scale
    radius = diameter * scale * spot_size / 2
    pad = margin * diameter * scale
    left, right = xy[:, 0].min() - pad, xy[:, 0].max() + pad
    top, bottom = xy[:, 1].min() - pad, xy[:, 1].max() + pad
    if image is not None:
        height, width = image.shape[:2]
        left, top = max(left, 0), max(top, 0)
        right, bottom = min(right, width), min(bottom, height)
        image = image[int(top) : int(np.ceil(bottom)), int(left) : int(np.ceil(right))]
        left, top = int(left), int(top)
        right, bottom = left + image.shape[1], top + image.shape[0]
    return Canvas(xy, radius, image, (left, right, bottom, top))


def _diameter(coords: np.ndarray) -> float:
    """Spot diameter guess without scale factors: half the typical nearest-neighbour distance."""
    if len(coords) < 2:
        return 1.0
    from scipy.spatial import cKDTree

    d, _ = cKDTree(coords).query(coords, k=2)
    return float(np.median(d[:, 1])) / 2


def _background(entry: dict, coords: np.ndarray, img_key: str | None):
    scalefactors = entry.get("scalefactors") or {}
    images = entry.get("images") or {}
    keys = (
        [img_key]
        if img_key
        else ["hires", "lowres", *[k for k in images if k not in ("hires", "lowres")]]
    )
    for key in keys:
        if key not in images or f"tissue_{key}_scalef" not in scalefactors:
            continue
        scale = float(scalefactors[f"tissue_{key}_scalef"])
        try:
            image = as_uint8_rgb(images[key], f"image {key!r}")
        except ValueError as error:
            logger.info("Not drawing the %r image: %s", key, error)
            continue
        if _covers(image, coords * scale):
            return image, scale
        logger.info("Not drawing the %r image: it does not cover the spots.", key)
    path = (entry.get("metadata") or {}).get("source_image_path")
    if not img_key and path and Path(str(path)).is_file():
        image, scale = read_image(path, reduce=8)  # 1/8 of a slide is plenty for a figure
        return np.asarray(image), scale
    return None, 1.0


def _covers(image: np.ndarray, xy: np.ndarray) -> bool:
    height, width = image.shape[:2]
    return bool(
        (xy[:, 0] >= 0).all()
        and (xy[:, 1] >= 0).all()
        and (xy[:, 0] < width).all()
        and (xy[:, 1] < height).all()
    )


def draw(
    ax: Axes,
    canvas: Canvas,
    values: np.ndarray,
    *,
    cmap: str,
    norm: Normalize,
    marked: np.ndarray | None = None,
    alpha: float = 1.0,
) -> PatchCollection:
    """Circles of the spots' true size coloured by ``values`` (NaN: grey outline only)."""
    if canvas.image is not None:
        left, right, bottom, top = canvas.extent
        ax.imshow(canvas.image, extent=(left, right, bottom, top), interpolation="antialiased")
    finite = np.isfinite(values)
    circles = [Circle(tuple(p), canvas.radius) for p in canvas.xy[finite]]
    spots = PatchCollection(circles, cmap=cmap, norm=norm, alpha=alpha, linewidths=0)
    spots.set_array(values[finite])
    ax.add_collection(spots)
    if (~finite).any():
        ax.add_collection(
            PatchCollection(
                [Circle(tuple(p), canvas.radius) for p in canvas.xy[~finite]],
                facecolor="none",
                edgecolor="0.6",
                linewidths=0.5,
            )
        )
    if marked is not None and marked.any():
        ax.add_collection(
            PatchCollection(
                [Circle(tuple(p), canvas.radius * 1.08) for p in canvas.xy[marked]],
                facecolor="none",
                edgecolor="black",
                linewidths=0.9,
            )
        )
    left, right, bottom, top = canvas.extent
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)  # image rows grow downwards
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    return spots
