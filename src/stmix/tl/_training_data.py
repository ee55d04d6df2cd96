"""What a fit reads from the AnnData: inputs, targets, split, genes, sections, patch geometry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import torch

from stmix import _anndata, _options, _store
from stmix.tl import _augmentations, _context
from stmix.tl._batches import Rows, is_lazy
from stmix.tl._embed import representation


@dataclass
class TrainingData:
    """What a fit reads from the AnnData, checked before anything is built."""

    inputs: np.ndarray  # uint8 patches, or a float32 representation
    embedding: dict | None  # how the representation was made (use_rep), else None
    use_rep: str | None
    train: np.ndarray
    val: np.ndarray
    genes: list[str]
    y_train: np.ndarray
    y_val: np.ndarray
    spot_scale: float
    geometry: dict  # spot_diameter_px, microns_per_pixel, spot_diameter_um of the patches
    library_key: str | None
    groups: np.ndarray | None  # each training spot's section
    sections: list[str] | None  # the sections trained on
    store_params: dict  # how the patches were cut (a store's reader needs it)
    scales: list[float] = field(default_factory=lambda: [1.0])  # fields of view of each input

    @property
    def patch_size(self) -> int | None:
        """The side of the patches trained on, or that the representation was made from."""
        if self.use_rep is None:
            return int(self.inputs.shape[1])
        return ((self.embedding or {}).get("patches") or {}).get("size")

    def split_inputs(self) -> tuple[torch.Tensor | Rows, torch.Tensor | Rows]:
        """The training and validation inputs: tensors, or rows read from the patch store."""
        if not is_lazy(self.inputs):
            return tuple(torch.from_numpy(self.inputs[rows]) for rows in (self.train, self.val))
        fast = _store.reader(self.inputs, self.store_params)
        return Rows(self.inputs, self.train, fast), Rows(self.inputs, self.val, fast)


def read_training_data(
    adata: ad.AnnData,
    *,
    layer: str | None,
    genes: Sequence[str] | str | None,
    augment: str,
    use_rep: str | None,
    library_key: str | None,
    split_key: str,
    patches_key: str,
    neighbors_key: str,
    scales: Sequence[float] = (1,),
) -> TrainingData:
    """Read and check what a fit trains on, before anything is built or written."""
    key = _anndata.library_key(adata, library_key)
    scales, _ = _context.check(scales, 0)
    if use_rep is None:
        inputs, embedding = _anndata.patches(adata, patches_key), None
    elif len(scales) > 1:
        raise ValueError(
            f"{_options.arg('scales', tuple(scales))} gives an image network wider fields of "
            f"view; a head reads an embedding: make it with context, "
            f"stmix.tl.embed(adata, scales={tuple(scales)}), and fit on that."
        )
    else:
        inputs, embedding = representation(adata, use_rep)
    train = _anndata.labelled(adata, split_key, "train")
    val = _anndata.split_indices(adata, split_key, "val")
    columns = _anndata.genes(adata, genes)
    y_train = _anndata.expression(adata, layer, obs=train, var=columns)
    y_val = _anndata.expression(adata, layer, obs=val, var=columns)
    _anndata.warn_if_counts(y_train, layer)
    groups = None if key is None else adata.obs[key].astype(str).to_numpy()[train]
    _augmentations.check_neighbors(adata, augment, train, neighbors_key, groups)
    patch_params = (adata.uns.get(patches_key) or {}).get("params") or {}
    geometry = _anndata.spot_geometry(adata, patches_key)
    if use_rep is not None:
        patch_params = (embedding or {}).get("patches") or {}
        geometry = {k: patch_params.get(k) for k in geometry}
    if len(scales) > 1:  # cut from the section's image around each spot, as the spot's patch
        inputs = _context.stacked(adata, patches_key, scales, inputs)
    return TrainingData(
        inputs=inputs,
        embedding=embedding,
        use_rep=use_rep,
        train=train,
        val=val,
        genes=[str(g) for g in adata.var_names[columns]],
        y_train=y_train,
        y_val=y_val,
        spot_scale=float(patch_params.get("spot_scale", 1.0)),
        geometry=geometry,
        library_key=key,
        groups=groups,
        sections=None if groups is None else list(dict.fromkeys(groups)),
        store_params=(adata.uns.get(patches_key) or {}).get("params") or {},
        scales=scales,
    )
