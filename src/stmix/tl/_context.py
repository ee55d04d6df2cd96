"""Context beside the spot: wider fields of view and the neighbourhood, for heads and networks.

The field's strongest HER2ST models look past the spot (TRIPLEX: the spot, its neighbourhood
and the slide; DKAN: several scales). ``tl.embed(scales=(1, 3), neighbors=6)`` gives heads and
the ridge probe the same: the encoder's features of the spot's patch, of a patch ``s`` times
wider around it (cut from the same image, at the same pixel size as the spot's patch), and the
mean of the spot features of its ``neighbors`` nearest spots of the same section.
``tl.fit(scales=(1, 3))`` gives an image network the wider fields as extra channels
(:func:`stacked`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anndata as ad
import numpy as np
from scipy.spatial import cKDTree

from stmix import _anndata, _validate
from stmix._keys import SPATIAL


def check(scales: Sequence[float], neighbors: int) -> tuple[list[float], int]:
    """The scales (the spot's own first) and the number of neighbours, checked."""
    scales = [float(_validate.number("scales", s, above=0)) for s in scales]
    if not scales or scales[0] != 1:
        raise ValueError(f"`scales` must start with 1 (the spot's own patch), not {scales!r}.")
    if len(set(scales)) != len(scales):
        raise ValueError(f"`scales` lists a scale twice: {scales!r}.")
    return scales, _validate.integer("neighbors", neighbors, minimum=0)


def wider_patches(adata: ad.AnnData, patches_key: str, scale: float) -> np.ndarray:
    """Patches ``scale`` times wider than ``obsm[patches_key]``, of the same size in pixels."""
    import stmix

    params = (adata.uns.get(patches_key) or {}).get("params") or {}
    spots = ad.AnnData(obs=adata.obs[[]].copy(), uns={SPATIAL: adata.uns.get(SPATIAL, {})})
    spots.obsm[SPATIAL] = np.asarray(adata.obsm[params.get("spatial_key", SPATIAL)])
    key = params.get("library_key")
    if key:
        spots.obs[key] = adata.obs[key].to_numpy()
    physical = params.get("side_um")
    stmix.pp.patches(
        spots,
        size=int(params.get("size", adata.obsm[patches_key].shape[1])),
        spot_scale=float(params.get("spot_scale", 1.0)) * scale,
        side_um=None if physical is None else float(physical) * scale,
        library_key=key,
        progress=False,
    )
    stain = params.get("stain")
    if stain:  # coloured as the spot's own patch
        stmix.pp.normalize_stain(
            spots, target=stain["target"], method=stain.get("method", "reinhard"), library_key=key
        )
    return spots.obsm["stmix_patches"]


def stacked(adata: ad.AnnData, patches_key: str, scales: list[float], spot=None) -> np.ndarray:
    """The spot's patches and each wider field of view, stacked along the channels.

    uint8 (n, size, size, 3 * len(scales)): the input of an image network with context
    (:class:`~stmix.nn.ExpressionPredictor`'s ``fields``). ``spot``: the spot's own patches,
    when already read.
    """
    spot = np.asarray(adata.obsm[patches_key] if spot is None else spot)
    wider = [wider_patches(adata, patches_key, scale) for scale in scales[1:]]
    return np.concatenate([spot, *wider], axis=-1)


def neighbourhood(adata: ad.AnnData, features: np.ndarray, k: int, library_key) -> np.ndarray:
    """Mean features of each spot's ``k`` nearest spots of its section (itself left out)."""
    coords = _anndata.spatial_coordinates(adata)
    key = _anndata.library_key(adata, library_key)
    sections = _anndata.libraries(adata, key) if key else {None: np.arange(adata.n_obs)}
    out = np.empty_like(features)
    for rows in sections.values():
        found = min(k, len(rows) - 1)
        if found < 1:
            out[rows] = features[rows]
            continue
        _, near = cKDTree(coords[rows]).query(coords[rows], k=found + 1)
        out[rows] = features[rows][near[:, 1:]].mean(axis=1)
    return out


def features(
    adata: ad.AnnData,
    spot: np.ndarray,
    encode: Callable[[np.ndarray], np.ndarray],
    *,
    scales: list[float],
    neighbors: int,
    patches_key: str,
) -> tuple[np.ndarray, dict]:
    """The spot's features with its context appended, and where each part lies."""
    parts, names = [spot], ["spot"]
    for scale in scales[1:]:
        parts.append(encode(wider_patches(adata, patches_key, scale)))
        names.append(f"scale_{scale:g}")
    if neighbors:
        library_key = ((adata.uns.get(patches_key) or {}).get("params") or {}).get("library_key")
        parts.append(neighbourhood(adata, spot, neighbors, library_key))
        names.append(f"neighbors_{neighbors}")
    bounds = np.cumsum([0] + [p.shape[1] for p in parts])
    where = {
        name: [int(a), int(b)] for name, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)
    }
    return np.concatenate(parts, axis=1).astype(np.float32), where
