"""Stain normalisation of patches: each section's colours moved onto a reference.

Two methods. Macenko's (``pp/_macenko.py``) unmixes haematoxylin and eosin in optical density
and re-mixes them with the reference's stain vectors and concentrations. Reinhard et al. (2001,
"Color transfer between images") match the mean and standard deviation of each channel in the
CIE L*a*b* space: stmix measures them over a section's tissue pixels (L* below
:data:`GLASS_L`, so that the glass around the tissue does not count) and maps every pixel of the
section's patches onto the reference's. Either way a section stained darker, paler or with
another eosin shifts as a whole, the tissue's own contrasts kept.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np

from stmix import _anndata, _owner
from stmix._docs import doc_params
from stmix._keys import PATCHES, SPLIT
from stmix.errors import InputTypeError, MissingKeyError
from stmix.pp import _macenko

#: Pixels lighter than this L* (0-100) are glass, not tissue.
GLASS_L = 85.0
#: Pixels per block converted at once (the L*a*b* conversion works in float64).
BLOCK = 2**22
WRITER = "stmix.pp.patches"
METHODS = ("reinhard", "macenko")


@doc_params
def normalize_stain(
    adata: ad.AnnData,
    *,
    target: str | dict = "train",
    method: str = "reinhard",
    patches_key: str = PATCHES,
    library_key: str | None = None,
    split_key: str = SPLIT,
    copy: bool = False,
) -> ad.AnnData | None:
    """Move each section's patch colours onto a reference stain, in place.

    Parameters
    ----------
    adata
        Spots with in-memory patches ``obsm[patches_key]`` (:func:`stmix.pp.patches`).
    target
        The reference: ``"train"``, the tissue pixels of the spots labelled ``train`` in
        ``obs[split_key]`` (all spots without a split), pooled over their sections; or the
        reference a model records (``model.config.stain["target"]``; Reinhard's
        ``{"mean": [L, a, b], "std": [L, a, b]}``, Macenko's ``{"stains": [H, E], "max": [2]}``),
        so that new slides match its training patches.
    method
        ``"reinhard"`` (each section's L*a*b* means and spreads moved onto the reference's) or
        ``"macenko"`` (each section's H and E unmixed and re-coloured with the reference's).
    patches_key
        The patches changed.
    library_key
        {library_key}
    split_key
        The split read for ``target="train"``.
    copy
        {copy}

    Returns
    -------
    anndata.AnnData or None
        ``None``, or a new AnnData when ``copy=True``; the patches ``obsm[patches_key]`` are
        replaced by their normalised colours and ``uns[patches_key]["params"]["stain"]``
        records ``method``, ``target`` and each section's ``source`` colours
        (:func:`stmix.tl.fit` keeps it in the model, :func:`stmix.tl.predict_slides` applies it).
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}, not {method!r}.")
    patches = _patches(adata, patches_key)
    key = _anndata.library_key(adata, library_key)
    sections = _anndata.libraries(adata, key) if key else {"": np.arange(adata.n_obs)}
    reference = _target(adata, patches, target, split_key, method)
    adata = adata.copy() if copy else adata
    out = np.asarray(adata.obsm[patches_key])
    sources = {}
    for name, rows in sections.items():
        source = _colours(method, out[rows])
        out[rows] = _move(method, out[rows], source, reference)
        sources[str(name)] = source
    adata.obsm[patches_key] = out
    record = adata.uns[patches_key]
    record["params"] = {
        **(record.get("params") or {}),
        "stain": {"method": method, "target": reference, "source": sources},
    }
    return adata if copy else None


def _patches(adata: ad.AnnData, key: str) -> np.ndarray:
    """The patches to normalise: in memory, and cut by stmix (whose record names them)."""
    if key not in adata.obsm:
        raise MissingKeyError(f"adata.obsm[{key!r}] is missing: cut patches with stmix.pp.patches.")
    patches = adata.obsm[key]
    if not isinstance(patches, np.ndarray):
        raise InputTypeError(
            f"adata.obsm[{key!r}] is read from a store (lazy): normalise the stain of patches "
            f"held in memory (stmix.pp.patches without store=)."
        )
    if patches.ndim != 4 or patches.shape[-1] != 3 or patches.dtype != np.uint8:
        raise ValueError(f"adata.obsm[{key!r}] must be uint8 (n, size, size, 3) patches.")
    if (adata.uns.get(key) or {}).get(_owner.WRITER) != WRITER:
        raise MissingKeyError(
            f"adata.uns[{key!r}] is not the record of stmix.pp.patches: normalise patches that "
            f"stmix cut."
        )
    if "stain" in (adata.uns[key].get("params") or {}):
        raise ValueError(
            f"The patches in adata.obsm[{key!r}] are normalised already: cut them again with "
            f"stmix.pp.patches to normalise them to another target."
        )
    return patches


def _target(adata, patches, target, split_key, method: str) -> dict:
    if isinstance(target, dict) and method == "macenko":
        return _macenko.check(target)
    if isinstance(target, dict):
        found = {k: [float(v) for v in target.get(k, [])] for k in ("mean", "std")}
        if any(len(v) != 3 for v in found.values()) or min(found["std"]) <= 0:
            raise ValueError(
                "`target` must be {'mean': [L, a, b], 'std': [L, a, b]} with positive stds."
            )
        return found
    if target != "train":
        raise ValueError(f"`target` must be 'train' or a recorded reference, not {target!r}.")
    rows = np.arange(adata.n_obs)
    if split_key in adata.obs:
        rows = _anndata.split_indices(adata, split_key, "train")
    return _colours(method, patches[rows])


def _colours(method: str, patches: np.ndarray) -> dict:
    return _macenko.colours(patches) if method == "macenko" else colours(patches)


def _move(method: str, patches: np.ndarray, source: dict, target: dict) -> np.ndarray:
    if method == "macenko":
        return _macenko.moved(patches, source, target)
    return _moved(patches, source, target)


def colours(patches: np.ndarray) -> dict:
    """Mean and standard deviation of L*, a*, b* over the tissue pixels of uint8 patches."""
    total = np.zeros(3)
    square = np.zeros(3)
    count = 0
    for block in _blocks(patches):
        tissue = block[block[:, 0] < GLASS_L]
        total += tissue.sum(axis=0)
        square += (tissue**2).sum(axis=0)
        count += len(tissue)
    if count == 0:
        raise ValueError("The patches hold no tissue (every pixel is glass): no stain to measure.")
    mean = total / count
    std = np.sqrt(np.maximum(square / count - mean**2, 1e-6))
    return {"mean": mean.tolist(), "std": std.tolist()}


def _blocks(patches: np.ndarray):
    """L*a*b* pixels (m, 3) of the patches, a block of pixels at a time."""
    from skimage.color import rgb2lab

    pixels = patches.reshape(-1, 3)
    for start in range(0, len(pixels), BLOCK):
        yield rgb2lab(pixels[start : start + BLOCK][None] / 255.0)[0]


def _moved(patches: np.ndarray, source: dict, target: dict) -> np.ndarray:
    """The patches with their L*a*b* statistics moved from ``source`` onto ``target``."""
    from skimage.color import lab2rgb

    shape = patches.shape
    scale = np.asarray(target["std"]) / np.asarray(source["std"])
    shift = np.asarray(target["mean"]) - np.asarray(source["mean"]) * scale
    out = np.empty((int(np.prod(shape[:-1])), 3), dtype=np.uint8)
    start = 0
    for block in _blocks(patches):
        with warnings.catch_warnings():  # colours moved out of gamut are clipped, as wanted
            warnings.filterwarnings("ignore", "Conversion from CIE-LAB", UserWarning)
            rgb = lab2rgb((block * scale + shift)[None])[0]
        out[start : start + len(block)] = np.round(np.clip(rgb, 0, 1) * 255)
        start += len(block)
    return out.reshape(shape)
