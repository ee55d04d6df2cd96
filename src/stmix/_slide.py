"""Whole-slide images, read region by region at the pixel size asked for (tiffslide, OpenSlide).

A slide (Aperio ``.svs``, Hamamatsu ``.ndpi``, a tiled or OME-TIFF pyramid, a large flat TIFF)
is never decoded whole: :meth:`Slide.read` decodes one region of one pyramid level, and
:meth:`Slide.thumbnail` builds a small view from the coarsest level that is fine enough, strip
by strip. TIFF-based files go through tiffslide (pure Python: SVS, NDPI, generic and OME-TIFF
pyramids, flat TIFFs); formats only OpenSlide reads (MIRAX, VMS, ...) go through OpenSlide when
it is installed. Both come with ``pip install "stmix[wsi]"``.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stmix._options import arg
from stmix.errors import MissingKeyError, UnavailableError

logger = logging.getLogger(__name__)

#: Files read as slides, region by region.
SLIDE_SUFFIXES = frozenset(
    {".svs", ".ndpi", ".scn", ".bif", ".tif", ".tiff", ".btf", ".qptiff", ".mrxs", ".vms"}
    | {".vmu", ".svslide"}
)
#: Formats that only OpenSlide reads.
OPENSLIDE_ONLY = frozenset({".mrxs", ".vms", ".vmu", ".svslide"})
#: Pixel sizes (µm) a microscope gives; a TIFF's default 72 dpi (353 µm) is not one of them.
MPP_RANGE = (0.02, 50.0)
#: Rows of a level decoded at once while a thumbnail is built: memory stays bounded.
STRIP_PIXELS = 2**24
EXTRA = "pip install 'stmix[wsi]'"
WHITE = 255


def is_slide(path: str | Path) -> bool:
    """Whether a file is of a kind read as a slide (TIFF family, SVS, NDPI, MIRAX, ...)."""
    return Path(path).suffix.lower() in SLIDE_SUFFIXES


class NotRGBError(ValueError):
    """A TIFF whose pixels are not 8-bit RGB (or RGBA); ``pyramid`` when it has several levels."""

    def __init__(self, message: str, pyramid: bool):
        super().__init__(message)
        self.pyramid = pyramid


class Slide:
    """A whole-slide image, read by region.

    ``size`` is level 0's ``(width, height)``; coordinates are level-0 pixels unless a method
    says otherwise. ``mpp`` is the level-0 pixel size in µm (the file's, or the one given).
    """

    def __init__(self, path: Path, reader: Any, backend: str, mpp: float | None):
        self.path = path
        self._reader = reader
        self.backend = backend
        self.levels: list[tuple[int, int]] = [tuple(map(int, d)) for d in reader.level_dimensions]
        self.downsamples = [_downsample(self.levels[0], level) for level in self.levels]
        self.mpp = mpp

    @classmethod
    def open(cls, path: str | Path, *, mpp: float | None = None) -> Slide:
        """Open a slide; clear errors for a missing, unreadable or non-RGB file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Slide file {path} does not exist.")
        reader, backend = _open_reader(path)
        slide = cls(path, reader, backend, None)
        slide.mpp = mpp if mpp is not None else slide.recorded_mpp()
        return slide

    @property
    def size(self) -> tuple[int, int]:
        return self.levels[0]

    @property
    def name(self) -> str:
        return self.path.name

    def recorded_mpp(self) -> float | None:
        """The level-0 pixel size the file records (vendor tags, TIFF resolution, OME), or None."""
        properties = self._reader.properties
        found = None
        for key in ("openslide.mpp-x", "tiffslide.mpp-x"):
            value = properties.get(key)
            if value not in (None, ""):
                found = float(value)
                break
        if found is None and self.backend == "tiffslide":
            found = _ome_mpp(self._reader)
        if found is None or not MPP_RANGE[0] <= found <= MPP_RANGE[1]:
            if found is not None:
                logger.debug(
                    "Ignoring the pixel size %g µm of %s: not a microscope's.", found, self
                )
            return None
        return found

    def level_for(self, downsample: float) -> int:
        """The coarsest level at least as fine as ``downsample`` (level-0 pixels per pixel)."""
        fine_enough = [i for i, d in enumerate(self.downsamples) if d <= max(downsample, 1) + 1e-6]
        return max(fine_enough) if fine_enough else 0

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """(height, width, 3) uint8 of ``level`` from its pixel ``(x, y)``; white off the slide."""
        out = np.full((height, width, 3), WHITE, dtype=np.uint8)
        level_width, level_height = self.levels[level]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, level_width), min(y + height, level_height)
        if x0 >= x1 or y0 >= y1:
            return out
        try:
            region = self._read(level, x0, y0, x1 - x0, y1 - y0)
        except Exception as error:  # decoders raise many kinds for damaged files
            raise ValueError(
                f"{self.path} could not be read at ({x0}, {y0}) of level {level}: the file is "
                f"damaged or truncated ({type(error).__name__}: {error})."
            ) from None
        out[y0 - y : y1 - y, x0 - x : x1 - x] = region
        return out

    @classmethod
    def from_arrays(cls, levels: list[Any], name: str, *, mpp: float | None = None) -> Slide:
        """A slide of (lazy) arrays, finest first, each (channels, y, x) as SpatialData holds one.

        A region is read from the chunks it touches (dask), never the whole array.
        """
        return cls(Path(name), ArrayLevels(levels, name), "array", mpp)

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        if self.backend == "array":
            return _rgb(self._reader.read(level, x, y, width, height))
        downsample = self.downsamples[level]
        # level-0 location whose level-`level` pixel is exactly (x, y) for both readers
        location = (math.ceil(x * downsample - 1e-9), math.ceil(y * downsample - 1e-9))
        if self.backend == "tiffslide":
            region = self._reader.read_region(location, level, (width, height), as_array=True)
        else:
            region = np.asarray(self._reader.read_region(location, level, (width, height)))
        return _rgb(np.asarray(region))

    def thumbnail(self, max_side: int) -> tuple[np.ndarray, float]:
        """The whole slide with its longest side at most ``max_side``, and its scale to level 0.

        Read from the coarsest level that is still at least as fine, a strip of rows at a time.
        """
        width, height = self.size
        scale = min(1.0, max_side / max(width, height))
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        level = self.level_for(1 / scale)
        level_width, level_height = self.levels[level]
        rows = max(1, STRIP_PIXELS // (3 * level_width))
        out = np.empty((target[1], target[0], 3), dtype=np.uint8)
        for start in range(0, level_height, rows):
            stop = min(start + rows, level_height)
            top, bottom = (
                _rescale(start, level_height, target[1]),
                _rescale(stop, level_height, target[1]),
            )
            if bottom <= top:
                continue
            strip = Image.fromarray(self.read(level, 0, start, level_width, stop - start))
            out[top:bottom] = np.asarray(
                strip.resize((target[0], bottom - top), Image.Resampling.BOX)
            )
        return out, target[0] / width

    def close(self) -> None:
        self._reader.close()

    def __repr__(self) -> str:
        width, height = self.size
        return f"slide {self.path.name} ({width} × {height} px, {len(self.levels)} levels)"


def _downsample(full: tuple[int, int], level: tuple[int, int]) -> float:
    """Level-0 pixels per pixel of a level.

    A pyramid made by reducing by a whole factor k has sides of ``ceil`` or ``floor`` of level
    0's over k; its downsample is k exactly, not the ratio of the sides (9911 rows over 4956 is
    1.9998, and taken as such it shifts a spot near the bottom of the slide by half a pixel).
    """
    ratios = [f / part for f, part in zip(full, level, strict=True)]
    factor = round(sum(ratios) / 2)
    if factor >= 1 and all(
        part in (math.floor(f / factor), math.ceil(f / factor))
        for f, part in zip(full, level, strict=True)
    ):
        return float(factor)
    return sum(ratios) / 2


def spatialdata_image(path: str | Path, element: str) -> Slide:
    """The image ``element`` of the SpatialData zarr store at ``path``, read lazily by region."""
    try:
        import spatialdata
    except ImportError:
        raise UnavailableError(
            "Reading a SpatialData image needs spatialdata, which is not installed: "
            "pip install 'stmix[spatialdata]'."
        ) from None
    sdata = spatialdata.read_zarr(path, selection=("images",))
    if element not in sdata.images:
        raise MissingKeyError(
            f"The SpatialData store {path} holds no image {element!r} (it holds "
            f"{sorted(sdata.images)})."
        )
    return Slide.from_arrays(image_levels(sdata.images[element]), element)


def image_levels(image: Any) -> list[Any]:
    """The (channels, y, x) arrays of a SpatialData image (DataTree or DataArray), finest first."""
    if hasattr(image, "children") and image.children:  # a multiscale DataTree
        names = sorted(image.children, key=lambda n: int("".join(filter(str.isdigit, n)) or 0))
        return [_channels_first(image[name]) for name in names]
    return [_channels_first(image)]


def _channels_first(node: Any) -> Any:
    data = node
    if hasattr(data, "ds"):  # a DataTree node: its dataset's one variable
        data = data.ds
    if hasattr(data, "data_vars"):
        data = data[next(iter(data.data_vars))]
    if tuple(data.dims) != ("c", "y", "x"):
        data = data.transpose("c", "y", "x")
    return data.data  # the (lazy) array itself


class ArrayLevels:
    """The levels of a multiscale image held as (channels, y, x) arrays, read like a slide."""

    def __init__(self, levels: list[Any], name: str):
        first = levels[0]
        if first.ndim != 3 or first.shape[0] not in (3, 4):
            raise NotRGBError(
                f"The image {name!r} has shape {tuple(first.shape)} (channels, y, x): stmix reads "
                f"H&E images of 3 (RGB) or 4 (RGBA) channels.",
                pyramid=len(levels) > 1,
            )
        self.levels = levels
        self.level_dimensions = [(int(a.shape[2]), int(a.shape[1])) for a in levels]
        self.level_downsamples = [self.level_dimensions[0][0] / d[0] for d in self.level_dimensions]
        self.properties: dict[str, Any] = {}

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        region = self.levels[level][:, y : y + height, x : x + width]
        region = np.asarray(region.compute() if hasattr(region, "compute") else region)
        return np.moveaxis(region, 0, -1)

    def close(self) -> None:
        """Nothing to close: the arrays belong to their container."""


def _rescale(row: int, rows: int, target: int) -> int:
    return round(row * target / rows)


def _open_reader(path: Path) -> tuple[Any, str]:
    """The reader of a file: tiffslide for TIFF-based files, OpenSlide for what only it reads."""
    if path.suffix.lower() in OPENSLIDE_ONLY:
        return _openslide(path), "openslide"
    tiffslide = _import("tiffslide")
    try:
        reader = tiffslide.TiffSlide(path)
        _check_rgb(reader, path)
        _check_complete(reader, path)
    except (NotRGBError, TruncatedError):
        raise
    except Exception as error:  # tifffile raises several kinds for damaged files
        if _has_openslide() and _openslide_reads(path):
            return _openslide(path), "openslide"
        raise ValueError(
            f"{path} cannot be read as a slide ({type(error).__name__}: {error}): the file is "
            f"damaged, truncated or of a kind stmix does not read."
        ) from None
    return reader, "tiffslide"


def _check_rgb(reader: Any, path: Path) -> None:
    """Refuse pixels other than 8-bit RGB(A), in one line."""
    level = reader.zarr_group["0"] if "0" in reader.zarr_group else None
    if level is None:
        return
    axes = reader.properties.get("tiffslide.series-axes")
    channels = 1 if axes == "YX" else (level.shape[0] if axes == "CYX" else level.shape[-1])
    if level.dtype != np.uint8 or channels not in (3, 4):
        raise NotRGBError(
            f"{path} holds {channels}-channel {level.dtype} pixels: stmix reads H&E slides "
            f"of 8-bit RGB (a fluorescence or 16-bit image is not one).",
            pyramid=reader.level_count > 1,
        )


class TruncatedError(ValueError):
    """A slide whose pixel data ends beyond the end of the file."""


def _check_complete(reader: Any, path: Path) -> None:
    """Refuse a file cut short (a download or copy that stopped) before any pixel is read."""
    tif = reader.ts_tifffile
    pages = getattr(tif, "series", None)
    if not pages or not hasattr(tif, "filehandle"):
        return
    size = tif.filehandle.size
    for level in tif.series[reader.properties.get("tiffslide.series-index", 0)].levels:
        for page in level.pages:
            offsets, counts = getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ())
            if len(offsets) and max(o + c for o, c in zip(offsets, counts, strict=True)) > size:
                raise TruncatedError(
                    f"{path} is truncated: its pixel data runs past the end of the file "
                    f"({size:,} bytes); the file is damaged or its copy did not finish."
                )


def _ome_mpp(reader: Any) -> float | None:
    """PhysicalSizeX of an OME-TIFF, in µm."""
    try:
        xml = reader.ts_tifffile.ome_metadata
    except Exception:  # not a TIFF, or no OME metadata
        return None
    if not xml:
        return None
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    for element in root.iter():
        if element.tag.endswith("}Pixels") and element.get("PhysicalSizeX"):
            unit = element.get("PhysicalSizeXUnit", "µm")
            factor = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4}.get(unit)
            return None if factor is None else float(element.get("PhysicalSizeX")) * factor
    return None


def _rgb(region: np.ndarray) -> np.ndarray:
    """RGB of a region read as RGB or RGBA (OpenSlide gives RGBA; transparent is no tissue)."""
    if region.ndim == 3 and region.shape[2] == 3:
        return region
    from stmix._image import as_uint8_rgb

    return as_uint8_rgb(region, "slide region")


def _import(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise UnavailableError(
            f"Reading whole-slide images needs {module}, which is not installed: {EXTRA}."
        ) from None


def _has_openslide() -> bool:
    try:
        import openslide  # noqa: F401
    except (ImportError, OSError):  # OSError: the package without its library
        return False
    return True


def _openslide_reads(path: Path) -> bool:
    import openslide

    return openslide.OpenSlide.detect_format(str(path)) is not None


def _openslide(path: Path) -> Any:
    if not _has_openslide():
        raise UnavailableError(
            f"{path.name} is a format only OpenSlide reads, and it is not installed: {EXTRA}."
        )
    import openslide

    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideError as error:
        raise ValueError(f"{path} cannot be read as a slide: {error}.") from None


def mpp_help() -> str:
    """What to do when a slide records no pixel size."""
    return f"pass its pixel size in µm with {arg('mpp')}"
