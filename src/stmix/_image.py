"""Finding the H&E image behind the spots, in whatever form the user has it."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stmix._slide import NotRGBError, Slide, image_levels, is_slide, spatialdata_image
from stmix.errors import InputTypeError

logger = logging.getLogger(__name__)

#: JPEG DCT scaling factors PIL can decode at directly.
_DRAFT_FACTORS = (8, 4, 2, 1)


@contextlib.contextmanager
def large_images() -> Iterator[None]:
    """Lift PIL's decompression-bomb limit while stmix reads a slide (they are that large)."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, from its header; clear errors when it is unreadable."""
    if not path.is_file():
        raise FileNotFoundError(f"Image file {path} does not exist.")
    slide = open_slide(path)
    if slide is not None:
        return slide.size
    with large_images():
        try:
            with Image.open(path) as probe:
                return probe.size
        except Exception as error:  # PIL raises several kinds for unreadable files
            raise ValueError(f"{path} is not an image PIL can read: {error}") from None


def open_slide(path: Path, mpp: float | None = None) -> Slide | None:
    """The file as a :class:`~stmix._slide.Slide` read by region, or None for a plain image.

    SVS, NDPI, MIRAX and 8-bit RGB TIFFs (pyramids, tiled or flat) are slides; JPEG, PNG and
    small single-level TIFFs of other pixel types (16-bit, grey) are decoded whole by PIL.
    """
    if not is_slide(path):
        return None
    try:
        return Slide.open(path, mpp=mpp)
    except NotRGBError as error:
        if error.pyramid:
            raise
        return None


def recorded_mpp(path: Path) -> float | None:
    """The pixel size (µm) an image file records: a slide's metadata; None for other images."""
    slide = open_slide(path)
    return None if slide is None else slide.mpp


def preview(path: str | os.PathLike, reduce: int) -> tuple[np.ndarray, float]:
    """An image file ``reduce`` times smaller (at most :data:`PREVIEW_SIDE` px), and its scale."""
    slide = open_slide(Path(path))
    if slide is not None:
        side = min(PREVIEW_SIDE, max(slide.size) / reduce)
        return slide.thumbnail(round(side))
    image, scale = read_image(path, reduce)
    return np.asarray(image), scale


#: Longest side of a slide's preview for figures.
PREVIEW_SIDE = 4000


@dataclass
class SpotImage:
    """An RGB image and how it maps onto the full-resolution frame of ``obsm["spatial"]``.

    A spot at full-resolution ``(x, y)`` lies at image pixel ``(x * scale - x0, y * scale - y0)``.
    The image is a PIL image, from which patches are resampled without copying the whole slide
    into an array, or a :class:`~stmix._slide.Slide` whose regions are decoded as patches need
    them.
    """

    image: Image.Image | Slide  # PIL: mode "RGB"
    scale: float
    source: str
    x0: float = 0.0
    y0: float = 0.0

    def locate(self, coords: np.ndarray) -> np.ndarray:
        """Image pixel positions of full-resolution coordinates."""
        return coords * self.scale - np.array([self.x0, self.y0])

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the image in its own pixels."""
        return self.image.size

    def outside(self, coords: np.ndarray) -> np.ndarray:
        """Boolean mask of the coordinates whose centre falls outside the image."""
        xy = self.locate(coords)
        width, height = self.size
        return (xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] >= width) | (xy[:, 1] >= height)


def _rgb(array: Any, what: str) -> Image.Image:
    return Image.fromarray(as_uint8_rgb(array, what), mode="RGB")


#: Values converted per block by :func:`as_uint8_rgb`: its float temporaries stay ~64 MB, not
#: 4-12 bytes per value of a whole slide.
_BLOCK_VALUES = 2**22


def as_uint8_rgb(array: Any, what: str) -> np.ndarray:
    """(H, W, 3) uint8 of a grey, RGB or RGBA image.

    8-bit values are kept; 16-bit integers are scaled by 255 / 65535; floats must lie in [0, 1];
    an alpha channel is flattened onto white (the glass around tissue). An 8-bit RGB array is
    returned as it is (no copy when contiguous); other images are converted a block of rows at a
    time, so memory beyond the result stays bounded however large the slide.
    """
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[2] == 1:  # squidpy (y, x, z, channels)
        array = array[:, :, 0]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"{what} must be an (height, width[, 3]) image, not shape {array.shape}.")
    if array.dtype == np.uint8 and array.shape[2] == 3:
        return np.ascontiguousarray(array)
    divisor = _divisor(array, what)
    height, width, channels = array.shape
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, _BLOCK_VALUES // (width * channels))
    for start in range(0, height, rows):
        values = array[start : start + rows].astype(np.float32)
        if divisor is None:
            _check_unit(values, array, what)
        else:
            values /= divisor
        if channels in (2, 4):  # grey + alpha, RGB + alpha: flattened onto white
            alpha, values = values[:, :, -1:], values[:, :, :-1]
            values = values * alpha + (1.0 - alpha)
        values *= 255
        out[start : start + rows] = np.round(values, out=values)  # grey broadcasts to 3 channels
    return out


def _divisor(array: np.ndarray, what: str) -> float | None:
    """What integer values are divided by to lie in [0, 1]; ``None`` for floats (checked)."""
    if array.dtype == np.uint8:
        return 255.0
    if np.issubdtype(array.dtype, np.floating):
        return None
    if array.dtype in (np.uint16, np.int32, np.int64, np.uint32, np.int16):
        if array.min() < 0:
            raise ValueError(f"{what} holds negative integers; it is not an image.")
        top = array.max()
        if top <= 255:
            return 255.0
        if top <= 65535:
            return 65535.0  # 16-bit
        raise ValueError(f"{what} holds integers above 65535; only 8- and 16-bit images are read.")
    raise ValueError(f"{what} has unsupported dtype {array.dtype}.")


def _check_unit(values: np.ndarray, array: np.ndarray, what: str) -> None:
    """Floats must be finite and in [0, 1]; the message describes the whole ``array``."""
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise ValueError(
            f"{what} holds floats outside [0, 1] (min {np.nanmin(array):.3g}, "
            f"max {np.nanmax(array):.3g}); it is not an RGB image."
        )


#: PIL modes that convert to RGB directly; the others go through :func:`as_uint8_rgb`.
_DIRECT_MODES = ("RGB", "L", "P", "1", "CMYK", "YCbCr", "HSV", "LAB")


def to_rgb(image: Image.Image, what: str) -> Image.Image:
    """An RGB version of a PIL image of any common mode (16-bit scaled, alpha onto white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return _rgb(np.asarray(image.convert("RGBA")), what)
    if image.mode in _DIRECT_MODES:
        return image.convert("RGB")
    if image.mode.startswith("I") or image.mode == "F":  # I;16, I;16B, I, F
        return _rgb(np.asarray(image), what)
    raise ValueError(f"{what} is a {image.mode!r} image; stmix reads RGB, grey, 16-bit and RGBA.")


def read_image(path: str | os.PathLike, reduce: int = 1) -> tuple[Image.Image, float]:
    """Decode an image file as RGB, at most ``reduce`` times smaller than full size.

    Returns the image and its scale relative to the file's full resolution. JPEGs are decoded
    directly at the reduced size (DCT scaling), which is several times faster than a full decode.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image file {path} does not exist.")
    try:
        with large_images(), Image.open(path) as image:
            width, height = image.size
            if reduce > 1:
                image.draft("RGB", (width // reduce, height // reduce))
            image.load()
            decoded = to_rgb(image, f"image {path.name}")
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(
            f"{path} cannot be decoded as an image ({error}): the file is damaged or is not an "
            f"image."
        ) from None
    return decoded, decoded.size[0] / width


def draft_factor(source_px: float, size: int) -> int:
    """Largest JPEG draft factor that still leaves twice ``size`` pixels across a patch.

    The final resampling then still low-passes by at least 2×, so a patch cut from a draft
    decode differs from one cut from the full decode by about a grey level.
    """
    for factor in _DRAFT_FACTORS:
        if source_px / factor >= 2 * size:
            return factor
    return 1


def open_file(path: str | os.PathLike, *, source_px: float, size: int, what: str) -> SpotImage:
    """A :class:`SpotImage` of an image file: a slide read by region, else decoded by PIL.

    A JPEG is decoded at the smallest draft size that still leaves twice ``size`` pixels across
    a patch of ``source_px`` full-resolution pixels.
    """
    slide = open_slide(Path(path))
    if slide is not None:
        return SpotImage(slide, 1.0, f"{what} {path}")
    decoded, scale = read_image(path, draft_factor(source_px, size))
    return SpotImage(decoded, scale, f"{what} {path}")


def from_user(image: Any, *, source_px: float, size: int) -> SpotImage:
    """A :class:`SpotImage` from ``image=``: array, path, PIL image or squidpy ImageContainer.

    Arrays, files and PIL images are taken in the full-resolution frame of ``obsm["spatial"]``;
    an ImageContainer brings its own ``scale`` (and crop offset).
    """
    if isinstance(image, (str, os.PathLike)):
        return open_file(image, source_px=source_px, size=size, what="file")
    if isinstance(image, Image.Image):
        return SpotImage(to_rgb(image, "the PIL image"), 1.0, "PIL image")
    if _is_image_container(image):
        return _from_container(image)
    if _is_spatialdata_image(image):
        return SpotImage(Slide.from_arrays(image_levels(image), "image"), 1.0, "SpatialData image")
    if isinstance(image, np.ndarray) or hasattr(image, "__array__"):
        return SpotImage(_rgb(image, "image"), 1.0, "array")
    raise InputTypeError(
        f"`image` must be an array, a file path, a PIL image or a squidpy ImageContainer, "
        f"not {type(image).__name__}."
    )


def _is_spatialdata_image(obj: Any) -> bool:
    """A SpatialData image element: an xarray DataTree of scales, or a DataArray with ``c``."""
    if type(obj).__name__ == "DataTree":
        return True
    return type(obj).__name__ == "DataArray" and "c" in getattr(obj, "dims", ())


def _is_image_container(obj: Any) -> bool:
    return type(obj).__name__ == "ImageContainer" and hasattr(obj, "data")


def _from_container(container: Any) -> SpotImage:
    layers = list(container)
    if not layers:
        raise ValueError("The ImageContainer holds no image layer.")
    layer = "image" if "image" in layers else layers[0]
    data = container[layer]
    array = np.asarray(data.transpose("y", "x", ...).values)
    attrs = container.data.attrs
    scale = float(attrs.get("scale", 1.0))
    x0 = y0 = 0.0
    coords, padding = attrs.get("coords"), attrs.get("padding")
    if coords is not None and hasattr(coords, "x0"):
        x0, y0 = float(coords.x0), float(coords.y0)
    if padding is not None and hasattr(padding, "x_pre"):
        x0, y0 = x0 - float(padding.x_pre), y0 - float(padding.y_pre)
    return SpotImage(
        _rgb(array, f"ImageContainer layer {layer!r}"),
        scale,
        f"ImageContainer layer {layer!r}",
        x0,
        y0,
    )


def source_exists(entry: dict) -> bool:
    """Whether a library's full-resolution image is there: a file, or a SpatialData store."""
    metadata = entry.get("metadata") or {}
    path = metadata.get("source_image_path")
    if not path:
        return False
    if metadata.get(SPATIALDATA_IMAGE):
        return Path(str(path)).is_dir()
    return Path(str(path)).is_file()


def open_source(entry: dict, *, source_px: float, size: int) -> SpotImage:
    """A library's full-resolution image (see :func:`source_exists`)."""
    metadata = entry.get("metadata") or {}
    path, element = str(metadata["source_image_path"]), metadata.get(SPATIALDATA_IMAGE)
    if element:
        slide = spatialdata_image(path, element)
        return SpotImage(slide, 1.0, f"full-resolution image {element!r} of {path}")
    return open_file(path, source_px=source_px, size=size, what="full-resolution image")


#: The metadata key naming the image element of a SpatialData store (``source_image_path``).
SPATIALDATA_IMAGE = "spatialdata_image"


def candidates(entry: dict, *, source_px: float, size: int) -> list[tuple[str, Any]]:
    """The images of a ``uns["spatial"]`` library, best resolution first, as lazy loaders."""
    found: list[tuple[float, str, Any]] = []
    if source_exists(entry):

        def load_full() -> SpotImage:
            return open_source(entry, source_px=source_px, size=size)

        found.append((1.0, "source_image_path", load_full))
    scalefactors = entry.get("scalefactors") or {}
    for key, img in (entry.get("images") or {}).items():
        scale = scalefactors.get(f"tissue_{key}_scalef")
        if scale is None:
            logger.debug("Skipping uns['spatial'] image %r: no tissue_%s_scalef.", key, key)
            continue
        if not (isinstance(scale, (int, float, np.number)) and np.isfinite(scale) and scale > 0):
            raise ValueError(
                f"scalefactors['tissue_{key}_scalef'] is {scale!r}: a scale factor must be a "
                f"positive number (full-resolution pixels times it give {key!r} pixels)."
            )

        def load(img: Any = img, key: str = key, scale: float = float(scale)) -> SpotImage:
            return SpotImage(_rgb(img, f"image {key!r}"), scale, f"{key!r} image")

        found.append((float(scale), key, load))
    found.sort(key=lambda item: -item[0])
    return [(name, loader) for _, name, loader in found]
