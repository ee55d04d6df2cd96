"""Where the tissue is on an H&E thumbnail: textured, stained regions, not tinted glass."""

from __future__ import annotations

import math

import numpy as np

#: Longest side, in pixels, of the thumbnail the detector works on.
WORKING_SIDE = 1200
#: Lowest local standard deviation of grey level (0-1) that can count as texture: above the
#: sensor noise of blank glass (a blank image with N(0, 12/255) noise stays below it after the
#: 3 px median filter) and below the texture of the smoothest tissue measured (mouse brain: 0.042).
TEXTURE_FLOOR = 0.03
#: Below this fraction of smooth pixels the image has no glass to tell tissue from (a crop
#: inside the tissue: 0.1% of a 300 px crop of HER2ST C2; whole sections: 31-82%).
NO_GLASS = 0.02
#: Side of the window over which the texture is measured, in working pixels.
TEXTURE_WINDOW = 9
#: Radius of the closing that joins textured patches into regions, in working pixels.
CLOSING_RADIUS = 6


def detect(rgb: np.ndarray) -> np.ndarray:
    """Boolean tissue mask of an RGB ``uint8`` image, at the image's resolution.

    Tissue is where two scikit-image rules agree, on a copy at most :data:`WORKING_SIDE` px:

    1. **texture**: the local standard deviation of the (3 px median-filtered) grey level, over
       a :data:`TEXTURE_WINDOW` px window, passes Otsu's threshold (at least
       :data:`TEXTURE_FLOOR`); the textured patches are joined by a closing of radius
       :data:`CLOSING_RADIUS` and enclosed holes filled. Glass is smooth whatever its tint:
       the eosin-tinted glass beside HER2ST C3-C6 is as saturated as pale stroma but has a
       texture of 0.005 against at least 0.09 under the measured spots.
    2. **stain**: the (5 px median-filtered) saturation passes multi-level Otsu's lower
       threshold (glass against the palest tissue), widened by two pixels, so that grey,
       textured things (dust, black ink, folds of the coverslip) are left out.

    Holes enclosed by tissue are filled and pieces smaller than 1/2000 of the image removed.
    A blank, flat or noise-only image gives an empty mask; an image with almost no smooth
    pixels (under :data:`NO_GLASS`, a crop inside the tissue) is tissue throughout.
    """
    from scipy import ndimage
    from skimage import morphology

    factor = max(1, math.ceil(max(rgb.shape[:2]) / WORKING_SIDE))
    small = rgb[::factor, ::factor]
    texture = _texture(small)
    if (texture < TEXTURE_FLOOR).mean() < NO_GLASS:
        return np.ones(rgb.shape[:2], dtype=bool)
    mask = _textured(texture) & ndimage.binary_dilation(_stained(small), iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    mask = morphology.remove_small_objects(mask, max_size=mask.size // 2000)
    if factor > 1:  # back to the image's resolution
        mask = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
        mask = mask[: rgb.shape[0], : rgb.shape[1]]
    return mask


def _texture(rgb: np.ndarray) -> np.ndarray:
    """Local standard deviation of the median-filtered grey level (0-1)."""
    from scipy import ndimage
    from skimage import color

    gray = ndimage.median_filter(color.rgb2gray(rgb), size=3)
    mean = ndimage.uniform_filter(gray, TEXTURE_WINDOW)
    square = ndimage.uniform_filter(gray**2, TEXTURE_WINDOW)
    return np.sqrt(np.clip(square - mean**2, 0.0, None))


def _textured(texture: np.ndarray) -> np.ndarray:
    """Regions of texture above Otsu's threshold, closed and with their holes filled."""
    from scipy import ndimage
    from skimage import filters, morphology

    if np.ptp(texture) < 1e-6:
        return np.zeros(texture.shape, dtype=bool)
    threshold = max(float(filters.threshold_otsu(texture)), TEXTURE_FLOOR)
    pad = 2 * CLOSING_RADIUS  # tissue cut by the image's edge is closed as if it went on
    textured = np.pad(texture > threshold, pad, mode="edge")
    closed = ndimage.binary_closing(textured, morphology.disk(CLOSING_RADIUS))
    return ndimage.binary_fill_holes(closed[pad:-pad, pad:-pad])


def _stained(rgb: np.ndarray) -> np.ndarray:
    """Pixels whose saturation passes multi-level Otsu's lower threshold."""
    from scipy import ndimage
    from skimage import color, filters

    saturation = ndimage.median_filter(color.rgb2hsv(rgb)[..., 1], size=5)
    if np.ptp(saturation) < 1e-3:
        return np.zeros(saturation.shape, dtype=bool)
    try:
        threshold = filters.threshold_multiotsu(saturation, classes=3)[0]
    except ValueError:  # too few distinct values for three classes
        threshold = filters.threshold_otsu(saturation)
    return saturation > threshold
