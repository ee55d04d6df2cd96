"""A frozen image encoder's features of every spot: the compact input of heads and probes."""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from collections.abc import Sequence

import anndata as ad
import numpy as np
import torch
from tqdm.auto import tqdm

from stmix import _anndata, _owner, _validate
from stmix._docs import doc_params
from stmix._keys import EMBEDDING, PATCHES, SPATIAL
from stmix.errors import MissingKeyError
from stmix.nn import hub
from stmix.nn.constants import DEFAULT_BACKBONE
from stmix.nn.encoder import DIHEDRAL, Encoder
from stmix.nn.images import to_float
from stmix.tl import _context
from stmix.tl._batches import batches
from stmix.tl._device import autocast, resolve_device

logger = logging.getLogger(__name__)

#: The default encoder: EfficientNet-Lite0, whose ImageNet weights install offline.
DEFAULT_ENCODER = DEFAULT_BACKBONE
WRITER = "stmix.tl.embed"


@doc_params
def embed(
    adata: ad.AnnData,
    *,
    backbone: str = DEFAULT_ENCODER,
    weights: str | os.PathLike | None = None,
    pretrained: bool = True,
    backbone_kwargs: dict | None = None,
    size: int | None = None,
    tta: bool | int = False,
    scales: Sequence[float] = (1,),
    neighbors: int = 0,
    stain: str | dict | None = None,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    patches_key: str = PATCHES,
    key_added: str = EMBEDDING,
    progress: bool = True,
    copy: bool = False,
) -> ad.AnnData | None:
    """Run a frozen image encoder over every patch and keep its pooled features.

    Each patch (:func:`stmix.pp.patches`) is resized to ``size`` (bilinear, antialiased),
    normalised with the encoder's own mean and standard deviation and passed through the
    backbone without its classifier; the pooled features are its embedding. The patches are read
    ``batch_size`` at a time, so memory stays flat with the number of spots; on CUDA the encoder
    runs in bf16. Heads and the ridge probe of :func:`stmix.tl.fit` (``use_rep=key_added``) train
    on the embedding in seconds.

    Parameters
    ----------
    adata
        Spots with ``obsm[patches_key]``.
    backbone
        Any timm model name, or a model on the Hugging Face hub as ``"hf-hub:<org>/<name>"``
        (the pathology foundation encoders: see the docs' table; from the local hub cache
        without any network call when it is there).
    weights
        A local weights file for the backbone (as in :func:`stmix.tl.fit`).
    pretrained
        Use pretrained weights: the local cache, the offline EfficientNet-Lite0 package, or the
        hub; without network and cache this fails within seconds and names ``weights=``.
    backbone_kwargs
        Extra creation arguments some models need (``init_values``, ``dynamic_img_size``;
        classes by import path, e.g. ``mlp_layer="timm.layers.SwiGLUPacked"``).
    size
        Input size of the encoder; default the size it was trained at (its configuration), so
        its own mean, standard deviation and resolution are used.
    tta
        Test-time augmentation: average the features over the 8 right-angle rotations and flips
        (``True``), or over the first ``tta`` of them.
    scales
        Context: also embed patches this many times wider around each spot (cut from the same
        image, at the patches' size in pixels), appended after the spot's features; ``(1, 3)``
        adds a field of view three times the patch's. The first scale is the spot's own, 1.
    neighbors
        Context: also append the mean spot features of each spot's ``neighbors`` nearest spots
        of the same section (0: none).
    stain
        Normalise every patch's stain before encoding it (the patches in ``obsm`` stay as
        they are): ``"macenko"`` or ``"reinhard"``, to the training spots' colours as
        :func:`stmix.pp.normalize_stain` does, section by section; or the record of an
        embedding made so (``uns[key_added]["params"]["stain"]``), to the reference it keeps.
        A head trained on the embedding keeps it, and :func:`stmix.tl.impute` normalises new
        spots the same way. ``None``: the patches as they are.
    batch_size
        Patches per forward pass.
    device
        ``"auto"`` (CUDA, MPS, CPU) or a torch device.
    patches_key
        Key of the patches in ``obsm``.
    key_added
        Key of the embedding in ``obsm`` and of its record in ``uns``.
    progress
        {progress}
    copy
        {copy}

    Returns
    -------
    anndata.AnnData or None
        ``None``, or a new AnnData when ``copy=True``; either way it holds ``obsm[key_added]``
        (float32, n_obs × the encoder's feature size) and ``uns[key_added]["params"]``:
        ``backbone``, ``weights`` (where they came from), ``pretrained``, ``size``, ``tta``,
        ``dim`` and ``patches`` (the size, scale and fingerprint of the patches embedded, to tell
        when the embedding is stale); with context, ``scales``, ``neighbors`` and ``parts``
        (the columns of each part: ``spot``, ``scale_3``, ``neighbors_6``); with ``stain``,
        ``stain``: its ``method`` and ``target``.
    """
    patches = _anndata.patches(adata, patches_key)
    size = _validate.integer("size", size, minimum=8, none=True)
    batch_size = _validate.integer("batch_size", batch_size)
    views = 8 if tta is True else 1 if tta is False else _validate.integer("tta", tta)
    scales, neighbors = _context.check(scales, neighbors)
    source, normalised = stained(adata, patches_key, stain)
    if views > len(DIHEDRAL):
        raise ValueError(f"`tta` must be at most {len(DIHEDRAL)} views, not {tta!r}.")
    _owner.claim(adata, WRITER, key_added, [("obsm", key_added), ("uns", key_added)])
    recorded_kwargs = hub.record_kwargs(backbone_kwargs)
    target = resolve_device(device)
    encoder = Encoder(
        backbone,
        pretrained=pretrained,
        weights=weights,
        img_size=size,
        backbone_kwargs=backbone_kwargs,
    )
    side = size or encoder.input_size or patches.shape[1]
    size = side

    def run(images: np.ndarray) -> np.ndarray:
        return encode(
            encoder,
            images,
            size=size,
            tta=views,
            batch_size=batch_size,
            device=target,
            progress=progress,
        )

    encoded = source.obsm[patches_key] if normalised else patches
    features, parts = _context.features(
        source, run(encoded), run, scales=scales, neighbors=neighbors, patches_key=patches_key
    )
    adata = adata.copy() if copy else adata
    adata.obsm[key_added] = features
    adata.uns[key_added] = _owner.mark(
        {
            "params": {
                "backbone": backbone,
                "weights": encoder.weights_source,
                "weights_file": None if weights is None else str(weights),
                "pretrained": bool(pretrained),
                "backbone_kwargs": recorded_kwargs,
                "size": int(side),
                "tta": int(views),
                "dim": int(features.shape[1]),
                "patches": patch_record(adata, patches, patches_key),
                **(
                    {"scales": scales, "neighbors": neighbors, "parts": parts}
                    if len(parts) > 1
                    else {}
                ),
                **({"stain": normalised} if normalised else {}),
            }
        },
        WRITER,
    )
    return adata if copy else None


def stained(adata: ad.AnnData, patches_key: str, stain: str | dict | None):
    """Spots whose patches (a copy) are stain-normalised, and the stain record; or ``adata``."""
    if stain is None:
        return adata, None
    import stmix

    method, target = stain, "train"
    if isinstance(stain, dict):
        method, target = stain.get("method"), stain.get("target")
    if method not in stmix.pp._stain.METHODS:
        raise ValueError(
            f"`stain` must be one of {list(stmix.pp._stain.METHODS)}, a recorded stain or None, "
            f"not {stain!r}."
        )
    spots = ad.AnnData(
        obs=adata.obs.copy(),
        obsm={k: adata.obsm[k] for k in (SPATIAL,) if k in adata.obsm},
        uns={k: copy.deepcopy(adata.uns[k]) for k in (SPATIAL, patches_key) if k in adata.uns},
    )
    patches = adata.obsm[patches_key]  # normalised in place below: a copy when in memory
    spots.obsm[patches_key] = patches.copy() if isinstance(patches, np.ndarray) else patches
    stmix.pp.normalize_stain(spots, target=target, method=method, patches_key=patches_key)
    record = spots.uns[patches_key]["params"]["stain"]
    return spots, {"method": method, "target": record["target"]}


@torch.inference_mode()
def encode(
    encoder: Encoder,
    patches: np.ndarray,
    *,
    size: int | None,
    tta: int,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
) -> np.ndarray:
    """Features (n, d) float32 of uint8 patches (n, s, s, 3), read ``batch_size`` at a time.

    ``patches`` may be lazy (a dask array over a store): only a few batches are in memory.
    """
    encoder.to(device).eval()
    out = np.empty((len(patches), encoder.num_features), dtype=np.float32)
    bar = tqdm(total=len(patches), desc="embed", unit="spot", disable=not progress, leave=False)
    start = 0
    for batch in batches(patches, batch_size):  # lazy patches: read by DataLoader workers
        with autocast(device):
            features = encoder.embed(to_float(batch.to(device)), size=size, tta=tta)
        out[start : start + len(batch)] = features.float().cpu().numpy()
        start += len(batch)
        bar.update(len(batch))
    bar.close()
    return out


def patch_record(adata: ad.AnnData, patches: np.ndarray, key: str) -> dict:
    """What identifies the patches an embedding was made from."""
    params = (adata.uns.get(key) or {}).get("params") or {}
    geometry = _anndata.spot_geometry(adata, key)
    return {
        "key": key,
        "size": int(patches.shape[1]),
        "spot_scale": float(params.get("spot_scale", 1.0)),
        "n_obs": int(patches.shape[0]),
        "fingerprint": fingerprint(patches),
        **{k: v for k, v in geometry.items() if v is not None},
        **({"stain": _stain_record(params["stain"])} if params.get("stain") else {}),
    }


def _stain_record(stain: dict) -> dict:
    """How the patches' stain was normalised (the target, not each section's source)."""
    return {k: stain[k] for k in ("method", "target") if k in stain}


def fingerprint(patches: np.ndarray) -> str:
    """A short hash of the patches' shape and of every 64th patch (fast on any number of spots)."""
    digest = hashlib.blake2b(repr(patches.shape).encode(), digest_size=8)
    step = max(1, len(patches) // 64)
    digest.update(np.ascontiguousarray(np.asarray(patches[::step])).tobytes())
    return digest.hexdigest()


def representation(
    adata: ad.AnnData, key: str, *, patches_key: str | None = None
) -> tuple[np.ndarray, dict]:
    """The embedding ``obsm[key]`` (float32, finite, 2-D) and its record, checked for staleness.

    When ``uns[key]`` records the patches it was made from and those patches are still in
    ``obsm``, they must be the same patches (size, scale and content).
    """
    if key not in adata.obsm:
        raise MissingKeyError(
            f"adata.obsm[{key!r}] is missing: compute it with stmix.tl.embed(adata) (or pass the "
            f"`use_rep=` key that holds your embedding)."
        )
    values = adata.obsm[key]
    values = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
        raise ValueError(
            f"adata.obsm[{key!r}] must be a numeric (n_obs, d) array to train a head on, not "
            f"{values.dtype} of shape {values.shape}."
        )
    values = values.astype(np.float32, copy=False)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values).all(axis=1)).sum())
        raise ValueError(f"adata.obsm[{key!r}] has NaN or infinite values for {bad} spots.")
    record = (adata.uns.get(key) or {}).get("params") or {}
    made_from = record.get("patches") or {}
    key_of_patches = patches_key or made_from.get("key")
    if made_from and key_of_patches in adata.obsm:
        current = patch_record(adata, adata.obsm[key_of_patches], key_of_patches)
        changed = [
            name
            for name in ("size", "spot_scale", "n_obs", "fingerprint")
            if current[name] != made_from.get(name)
        ]
        if changed:
            what = ", ".join(
                f"{name} {made_from.get(name)} -> {current[name]}"
                for name in changed
                if name != "fingerprint"
            )
            raise ValueError(
                f"adata.obsm[{key!r}] is stale: it was computed from other patches than those "
                f"now in adata.obsm[{key_of_patches!r}] ({what or 'the pixels differ'}). Run "
                f"stmix.tl.embed(adata) again."
            )
    return values, record
