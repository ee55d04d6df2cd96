"""The settings of an imputer's training, and the named presets that fill them in.

This is the one place where training defaults live: :func:`stmix.tl.fit`, :func:`stmix.tl.compare`,
the ``stmix`` command and the benchmarks all start from a preset and change only what they are
told to. Importing this module loads neither torch nor Lightning.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stmix import _options, _validate
from stmix.errors import InputTypeError
from stmix.nn.constants import DEFAULT_BACKBONE, LOSS_WEIGHTS

TARGETS = ("expression", "delta")
EDGE_WEIGHTS = ("paper", "reference")


@dataclass(frozen=True)
class TrainingConfig:
    """Every setting of an imputer's training.

    Attributes
    ----------
    backbone
        timm model name of the image network.
    size
        Patch side in pixels the preset was measured at (the ``stmix`` command and the
        benchmarks cut patches of this size; :func:`stmix.tl.fit` trains on whatever patches
        ``obsm`` holds).
    epochs
        Maximum number of epochs.
    batch_size
        Anchors per step and process (each mixing step runs the backbone on ``3 × batch_size``
        images; with ``devices=2`` two such batches run at once).
    lr, min_lr
        AdamW's learning rate, annealed on a cosine to ``min_lr`` over all steps.
    weight_decay, betas, eps
        AdamW's other settings.
    patience
        Stop after this many epochs without a lower validation MSE; ``None`` never stops early.
    target
        ``"expression"`` learns the expression; ``"delta"`` its deviation from the mean training
        expression, added back at prediction.
    dropout
        Dropout before the linear head.
    alpha
        The mixing ratio is drawn from Beta(alpha, alpha).
    loss_weights
        Weights of the ``consistency``, ``edge`` and ``correlation`` terms of the composite loss.
    edge_weight
        ``"paper"``: the edge term weighs a pair by the probability it was drawn with (eq. 6);
        ``"reference"``: by the expression kernel normalised over all training spots.
    stain
        Strength σ of the HED jitter that re-colours every training image (Tellez et al. 2018:
        each stain scaled by 1 + U(-σ, σ) and shifted by U(-σ, σ); their "HED-light" is 0.05);
        0: none. Images only (an embedding cannot be re-coloured).
    """

    backbone: str = DEFAULT_BACKBONE
    size: int = 112
    epochs: int = 40
    batch_size: int = 8
    lr: float = 1e-3
    min_lr: float = 1e-7
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    patience: int | None = 10
    target: str = "delta"
    dropout: float = 0.2
    alpha: float = 1.0
    loss_weights: Mapping[str, float] = field(default_factory=lambda: dict(LOSS_WEIGHTS))
    edge_weight: str = "paper"
    stain: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ValueError(
                f"{_options.name('backbone')} must be a timm model name, not {self.backbone!r}."
            )
        _validate.integer("size", self.size, minimum=8)
        _validate.integer("epochs", self.epochs)
        _validate.integer("batch_size", self.batch_size)
        _validate.number("lr", self.lr, above=0)
        _validate.number("min_lr", self.min_lr, at_least=0)
        if self.min_lr > self.lr:
            raise ValueError(
                f"`min_lr` ({self.min_lr:g}) must not exceed {_options.name('lr')} ({self.lr:g}): "
                f"the cosine schedule anneals from lr down to min_lr."
            )
        _validate.number("weight_decay", self.weight_decay, at_least=0)
        betas = tuple(self.betas)
        if len(betas) != 2:
            raise ValueError(f"`betas` must be two numbers in [0, 1), not {self.betas!r}.")
        for beta in betas:
            _validate.number("betas", beta, at_least=0, below=1)
        object.__setattr__(self, "betas", tuple(float(b) for b in betas))
        _validate.number("eps", self.eps, above=0)
        _validate.integer("patience", self.patience, none=True)
        _validate.choice("target", self.target, TARGETS)
        _validate.number("dropout", self.dropout, at_least=0, below=1)
        _validate.number("alpha", self.alpha, above=0)
        _validate.choice("edge_weight", self.edge_weight, EDGE_WEIGHTS)
        _validate.number("stain", self.stain, at_least=0, below=1)
        if not isinstance(self.loss_weights, Mapping):
            raise InputTypeError(f"`loss_weights` must be a dict, not {self.loss_weights!r}.")
        unknown = set(self.loss_weights) - set(LOSS_WEIGHTS)
        if unknown:
            raise ValueError(
                f"Unknown `loss_weights` {sorted(unknown)}; the terms are {list(LOSS_WEIGHTS)}."
            )
        weights = {**LOSS_WEIGHTS, **self.loss_weights}
        for name, value in weights.items():
            _validate.number(f"loss_weights[{name!r}]", value, at_least=0)
        object.__setattr__(self, "loss_weights", {k: float(v) for k, v in weights.items()})

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with ``changes`` applied (and checked); ``None`` values change nothing."""
        changes = {k: v for k, v in changes.items() if v is not None or k == "patience"}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(
                f"Unknown training settings {sorted(unknown)}; the settings are "
                f"{[f.name for f in dataclasses.fields(self)]}."
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain Python values (JSON and ``.h5ad`` friendly)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        out["loss_weights"] = dict(self.loss_weights)
        return out


#: ``cpu``: the configuration the CPU benchmark measured (EfficientNet-Lite0 with ImageNet weights
#: at 112 px; lr 1e-3 and the delta target chosen on the validation MSE of ``none`` on C2:
#: 3e-5 gave 0.506, 1e-4 0.482, 3e-4 0.470, 1e-3 0.464). ``paper``: the SNR-ST-Mix paper's
#: ViT-L/16 at 224 px with its optimiser settings (a GPU and the ViT's weights needed).
PRESETS: dict[str, TrainingConfig] = {
    "cpu": TrainingConfig(),
    "paper": TrainingConfig(
        backbone="vit_large_patch16_224",
        size=224,
        epochs=100,
        lr=3e-5,
        patience=20,
        target="expression",
    ),
}
DEFAULT_PRESET = "cpu"


def resolve(preset: str | TrainingConfig = DEFAULT_PRESET, **changes: Any) -> TrainingConfig:
    """The preset named ``preset`` (or a :class:`TrainingConfig`) with ``changes`` applied."""
    if isinstance(preset, TrainingConfig):
        base = preset
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise ValueError(
            f"{_options.name('preset')} must be one of {list(PRESETS)} or a "
            f"stmix.tl.TrainingConfig, not {preset!r}."
        )
    return base.replace(**changes)
