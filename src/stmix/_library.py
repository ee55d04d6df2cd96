"""A section's ``uns["spatial"]`` library in the scanpy layout, made from its image.

Space Ranger's layout: ``images`` holds ``hires`` (longest side 2,000 px) and ``lowres`` (600 px)
with their ``tissue_<key>_scalef``; ``metadata["source_image_path"]`` names the full-resolution
file that :func:`stmix.pp.patches` cuts from (region by region for a whole-slide image).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from stmix import _image

#: Longest side of the stored ``hires`` and ``lowres`` images, as Space Ranger writes them.
HIRES_SIDE = 2000
LOWRES_SIDE = 600


def images(preview: np.ndarray, size: tuple[int, int]) -> tuple[dict, dict]:
    """``hires`` and ``lowres`` of an image of full-resolution ``size`` (width, height).

    Both are resized (Lanczos) from ``preview``, the whole image at any scale at least as fine as
    ``hires``; returns the images and their ``tissue_<key>_scalef``.
    """
    width, height = size
    picture = Image.fromarray(preview)
    found, scalefactors = {}, {}
    for key, side in (("hires", HIRES_SIDE), ("lowres", LOWRES_SIDE)):
        scale = min(1.0, side / max(width, height))
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        found[key] = np.asarray(picture.resize(target, Image.Resampling.LANCZOS))
        scalefactors[f"tissue_{key}_scalef"] = float(scale)
    return found, scalefactors


def preview(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """The image file at about ``hires`` size (a slide's coarse level, a JPEG's draft decode)."""
    size = _image.image_size(path)
    slide = _image.open_slide(path)
    if slide is not None:
        return slide.thumbnail(HIRES_SIDE)[0], size
    reduce = min(8, max(1, math.floor(max(size) / HIRES_SIDE)))
    decoded, _ = _image.read_image(path, reduce=reduce)
    return np.asarray(decoded), size


def from_file(path: str | Path, *, spot_diameter_px: float, mpp: float | None, **metadata) -> dict:
    """The library of a section whose full-resolution image is the file at ``path``.

    ``metadata`` (the platform, say) is kept beside ``source_image_path``,
    ``full_resolution_shape`` and ``microns_per_pixel``.
    """
    path = Path(path)
    small, (width, height) = preview(path)
    found, scalefactors = images(small, (width, height))
    scalefactors["spot_diameter_fullres"] = float(spot_diameter_px)
    record = {
        "source_image_path": str(path.resolve()),
        "full_resolution_shape": [int(height), int(width)],
        **metadata,
    }
    if mpp is not None:
        record["microns_per_pixel"] = float(mpp)
    return {"images": found, "scalefactors": scalefactors, "metadata": record}
