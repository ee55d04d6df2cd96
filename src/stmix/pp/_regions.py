"""Cutting patches from a whole-slide image, one region of one pyramid level at a time.

Spots are grouped into square cells; each cell's region (its patches and the resampling filter's
support around them) is decoded once from the coarsest level that still has four times the
patch size across a patch, and every patch in it is resampled as an in-memory image's patch is (PIL
bicubic with a sub-pixel box). Memory is a few regions, whatever the size of the slide; cells are
decoded on a few threads (the JPEG decoder and PIL release the GIL).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from stmix._image import SpotImage
from stmix._slide import Slide

#: Side of the cells spots are grouped into, in pixels of the level read (a region of about
#: 2,048² px, 12 MB, per thread).
CELL = 2048
#: A patch is resampled from a level with at least this many pixels per output pixel. With 4,
#: patches of C2 differ from the in-memory path's by 0.5 grey levels (size 32) and 1.0 (size
#: 16) on average; with 2, a box-filtered pyramid level aliases and they differ by 2.2 and 2.7.
OVERSAMPLE = 4
#: Threads decoding regions at once.
THREADS = min(4, os.cpu_count() or 1)

Resample = Callable[[Image.Image, tuple[float, float, float, float], int], np.ndarray]


def cut(
    spot_image: SpotImage,
    coords: np.ndarray,
    side: float,
    size: int,
    resample: Resample,
    done: Callable[[int], None],
    out: tuple[np.ndarray, np.ndarray],
) -> None:
    """The square of side ``side`` (full-resolution px) at spot ``k`` into ``array[rows[k]]``.

    ``out`` is ``(array, rows)``; ``resample(image, box, size)`` cuts one patch out of a decoded
    region, as the in-memory path does; ``done(n)`` is told of every ``n`` patches cut.
    """
    slide: Slide = spot_image.image
    side_px = side * spot_image.scale
    level = slide.level_for(side_px / (OVERSAMPLE * size))
    downsample = slide.downsamples[level]
    centres = spot_image.locate(coords + 0.5) / downsample  # continuous, in the level's pixels
    half = side_px / downsample / 2
    margin = math.ceil(2 * max(2 * half / size, 1.0)) + 1

    def region(spots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x0, y0 = np.floor(centres[spots].min(axis=0) - half).astype(int) - margin
        x1, y1 = np.ceil(centres[spots].max(axis=0) + half).astype(int) + margin
        block = Image.fromarray(slide.read(level, x0, y0, x1 - x0, y1 - y0))
        patches = np.empty((len(spots), size, size, 3), dtype=np.uint8)
        for k, (cx, cy) in enumerate(centres[spots] - (x0, y0)):
            patches[k] = resample(block, (cx - half, cy - half, cx + half, cy + half), size)
        return spots, patches

    array, rows = out
    with ThreadPoolExecutor(THREADS) as pool:
        for spots, patches in pool.map(region, _cells(centres, max(CELL, 8 * half))):
            array[rows[spots]] = patches
            done(len(spots))


def _cells(centres: np.ndarray, cell: float) -> Iterator[np.ndarray]:
    """Indices of the spots in each square cell of side ``cell``, row by row."""
    if not len(centres):
        return
    keys = np.floor(centres / cell).astype(np.int64)
    order = np.lexsort((keys[:, 0], keys[:, 1]))
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, (np.diff(sorted_keys, axis=0) != 0).any(axis=1)])
    yield from np.split(order, starts[1:])
