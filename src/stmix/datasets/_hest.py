"""Samples of a HEST-1k download: expression, whole-slide image and pixel size per sample."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np

from stmix import _anndata, _image, _library
from stmix._keys import SPATIAL
from stmix.errors import MissingKeyError

#: Where a HEST-1k sample keeps each part, relative to the download's root.
LAYOUT = {"st": "st/{id}.h5ad", "wsi": "wsis/{id}.tif", "metadata": "metadata/{id}.json"}
#: The pixel-size keys of a sample's metadata, the one HEST estimated from the spots first.
MPP_KEYS = ("pixel_size_um_estimated", "pixel_size_um_embedded")


def hest(root: str | os.PathLike, ids: str | Sequence[str]) -> ad.AnnData:
    """Read HEST-1k samples as the AnnData that :mod:`stmix.pp` and :mod:`stmix.tl` take.

    Each sample is ``st/<id>.h5ad`` (spots in the pixels of the whole-slide image),
    ``wsis/<id>.tif`` (a pyramidal TIFF, read region by region) and ``metadata/<id>.json``
    (``pixel_size_um_estimated``, ``spot_diameter`` in µm, ``st_technology``, ...), as HEST-1k is
    laid out on disk. Several samples become one AnnData with ``obs["library_id"]``, as
    :func:`stmix.pp.concat` makes it.

    Parameters
    ----------
    root
        The folder that holds ``st/``, ``wsis/`` and ``metadata/``.
    ids
        One sample id (``"TENX95"``) or several.

    Returns
    -------
    anndata.AnnData
        The samples' expression as stored; ``obsm["spatial"]`` and ``uns["spatial"][id]`` in the
        scanpy layout: ``images`` (``hires``, ``lowres`` from the slide's coarse levels),
        ``scalefactors`` (``spot_diameter_fullres`` from ``spot_diameter`` and the pixel size) and
        ``metadata`` (``source_image_path`` = the slide, ``microns_per_pixel``, ``platform``,
        ``organ``, ``species``). With several ids, ``obs["library_id"]``.
    """
    root = Path(root)
    if isinstance(ids, str):
        return _sample(root, ids)
    if not ids:
        raise ValueError("`ids` names no sample.")
    from stmix.pp._concat import concat

    return concat({sample: _sample(root, sample) for sample in ids})


def _sample(root: Path, sample: str) -> ad.AnnData:
    paths = {part: root / pattern.format(id=sample) for part, pattern in LAYOUT.items()}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"HEST sample {sample!r} is incomplete under {root}: {', '.join(missing)} missing "
            f"(a HEST-1k sample has st/<id>.h5ad, wsis/<id>.tif and metadata/<id>.json)."
        )
    metadata = json.loads(paths["metadata"].read_text())
    adata = ad.read_h5ad(paths["st"])
    coords = _anndata.spatial_coordinates(adata, SPATIAL)
    mpp = next((float(metadata[k]) for k in MPP_KEYS if metadata.get(k)), None)
    if mpp is None:
        mpp = _image.recorded_mpp(paths["wsi"])
    if mpp is None:
        raise MissingKeyError(
            f"{paths['metadata']} records no pixel size ({' or '.join(MPP_KEYS)}) and neither "
            f"does {paths['wsi'].name}."
        )
    if not metadata.get("spot_diameter"):
        raise MissingKeyError(f"{paths['metadata']} has no 'spot_diameter' (µm).")
    adata.obsm[SPATIAL] = np.asarray(coords, dtype=np.float64)
    adata.var_names_make_unique()
    described = {
        "platform": metadata.get("st_technology"),
        "organ": metadata.get("organ"),
        "species": metadata.get("species"),
    }
    adata.uns[SPATIAL] = {
        sample: _library.from_file(
            paths["wsi"],
            spot_diameter_px=float(metadata["spot_diameter"]) / mpp,
            mpp=mpp,
            **{k: str(v) for k, v in described.items() if v is not None},
        )
    }
    return adata
