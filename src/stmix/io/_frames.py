"""SpatialData's coordinate systems as affine matrices, and the pieces both directions share."""

from __future__ import annotations

from typing import Any

import numpy as np

from stmix.errors import UnavailableError

EXTRA = "pip install 'stmix[spatialdata]'"
#: ``uns["spatial"][library]["metadata"]`` keys that say where a section came from.
IMAGE, SHAPES, SYSTEM, TABLE, INSTANCE = (
    "spatialdata_image",
    "spatialdata_shapes",
    "spatialdata_coordinate_system",
    "spatialdata_table",
    "spatialdata_instance_key",
)


def spatialdata() -> Any:
    """The spatialdata module, or an error naming the extra that installs it."""
    try:
        import spatialdata
    except ImportError:
        raise UnavailableError(
            f"Reading and writing SpatialData needs spatialdata, which is not installed: {EXTRA}."
        ) from None
    return spatialdata


def systems(element: Any) -> dict[str, np.ndarray]:
    """Each coordinate system ``element`` lives in, with its 3 × 3 affine (x, y) matrix."""
    from spatialdata.transformations import get_transformation

    found = get_transformation(element, get_all=True) or {}
    return {
        name: np.asarray(
            transform.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")),
            dtype=np.float64,
        )
        for name, transform in found.items()
    }


def apply(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``xy`` (n, 2) through a 3 × 3 affine matrix."""
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


def scale(matrix: np.ndarray) -> float:
    """How much the affine ``matrix`` scales lengths (the square root of its area factor)."""
    return float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
