"""A Space Ranger ``outs/`` folder, with its full-resolution image as the source of patches."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
from scipy.spatial import cKDTree

from stmix import _image, _loggers
from stmix._keys import SPATIAL

#: Centre-to-centre distance of Visium's spots, in µm.
VISIUM_PITCH_UM = 100.0


def visium(
    path: str | os.PathLike,
    *,
    source_image_path: str | os.PathLike | None = None,
    counts_file: str = "filtered_feature_bc_matrix.h5",
    library_id: str | None = None,
    mpp: float | None = None,
) -> ad.AnnData:
    """Read a Space Ranger ``outs/`` folder: counts, spot positions, images and scale factors.

    :func:`squidpy.read.visium` reads the folder; stmix adds what patches need: the
    full-resolution image the spots' pixel positions refer to (the microscope image Space Ranger
    was given: a JPEG, a flat or pyramidal TIFF; read region by region, never whole) and the
    pixel size. Without ``source_image_path``, patches are cut from ``tissue_hires_image.png``.

    Parameters
    ----------
    path
        The ``outs/`` folder (``filtered_feature_bc_matrix.h5``, ``spatial/``).
    source_image_path
        The full-resolution H&E image given to Space Ranger.
    counts_file
        The counts file in ``path``.
    library_id
        Name of the section in ``uns["spatial"]``; default the one the counts file records.
    mpp
        Micrometres per full-resolution pixel; default what the image file records (a slide's
        metadata), else Visium's 100 µm spot pitch over the spots' median distance in pixels.

    Returns
    -------
    anndata.AnnData
        Raw counts in ``X``; ``obsm["spatial"]`` (full-resolution pixels), ``obs["in_tissue"]``,
        ``obs["array_row"]``, ``obs["array_col"]``; ``uns["spatial"][library_id]`` with
        ``images`` (``hires``, ``lowres``), ``scalefactors`` and ``metadata``
        (``source_image_path``, ``microns_per_pixel``, ``full_resolution_shape``).
    """
    path = Path(path)
    if not (path / counts_file).is_file():
        raise FileNotFoundError(
            f"{path} holds no {counts_file}: pass Space Ranger's outs/ folder (or counts_file=)."
        )
    source = None
    if source_image_path is not None:
        source = Path(source_image_path)
        _image.image_size(source)  # readable, before anything is read
    squidpy = _loggers.quiet_import("squidpy")
    adata = squidpy.read.visium(
        path, counts_file=counts_file, library_id=library_id, source_image_path=source
    )
    adata.var_names_make_unique()
    name = next(iter(adata.uns[SPATIAL]))
    entry = adata.uns[SPATIAL][name]
    metadata = dict(entry.get("metadata") or {})
    if source is not None:
        metadata["source_image_path"] = str(source.resolve())
        width, height = _image.image_size(source)
        metadata["full_resolution_shape"] = [int(height), int(width)]
        mpp = mpp if mpp is not None else _image.recorded_mpp(source)
    if mpp is None:
        mpp = VISIUM_PITCH_UM / _pitch(adata.obsm[SPATIAL])
    metadata["microns_per_pixel"] = float(mpp)
    entry["metadata"] = metadata
    adata.obsm[SPATIAL] = np.asarray(adata.obsm[SPATIAL], dtype=np.float64)
    return adata


def _pitch(coords: np.ndarray) -> float:
    """Median distance from each spot to its nearest neighbour, in pixels."""
    distances, _ = cKDTree(coords).query(coords, k=2)
    return float(np.median(distances[:, 1]))
