"""The network a fit trains: a timm backbone on the patches, or a head on a representation."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from stmix import _options
from stmix._presets import TrainingConfig
from stmix.nn.head import ExpressionHead
from stmix.nn.model import ExpressionPredictor
from stmix.tl._standardise import standardise
from stmix.tl._training_data import TrainingData

logger = logging.getLogger(__name__)

#: The buffers of :class:`~stmix.nn.ExpressionHead` that a standardisation fills.
STANDARDISED = ("center", "scale", "low", "high")


def build_network(
    data: TrainingData,
    config: TrainingConfig,
    *,
    head: str,
    pretrained: bool,
    weights: str | os.PathLike | None,
    backbone_kwargs: Mapping[str, Any] | None,
) -> ExpressionPredictor | ExpressionHead:
    """The untrained network; with the delta target its output starts at the training mean."""
    offset = torch.from_numpy(data.y_train.mean(axis=0)) if config.target == "delta" else None
    if data.use_rep is not None:
        return _head(data, config, head, offset)
    network = ExpressionPredictor(
        len(data.genes),
        config.backbone,
        pretrained=pretrained,
        weights=weights,
        dropout=config.dropout,
        offset=offset,
        img_size=data.patch_size,
        backbone_kwargs=dict(backbone_kwargs or {}) or None,
        fields=len(data.scales),
    )
    logger.info("Backbone %s (%s).", config.backbone, network.weights_source)
    return network


def _head(data: TrainingData, config: TrainingConfig, kind: str, offset) -> ExpressionHead:
    seen = standardise(data.inputs[data.train])
    if seen.constant > seen.scale.size / 2:
        logger.warning(
            "%d of the %d features of obsm[%r] are constant over the training spots: the "
            "embedding says little about these patches (patches too small for the encoder? "
            "Lite0 and ResNets want 64 px and more).",
            seen.constant,
            seen.scale.size,
            data.use_rep,
        )
    return ExpressionHead(
        data.inputs.shape[1],
        len(data.genes),
        kind=kind,
        dropout=config.dropout,
        offset=offset,
        **{k: torch.from_numpy(np.asarray(getattr(seen, k))) for k in STANDARDISED},
    )


def check_single_images(network: torch.nn.Module, config: TrainingConfig, augment: str) -> None:
    """Refuse one image per step for a network with BatchNorm (it cannot normalise one image)."""
    batch_norm = any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in network.modules()
    )
    if config.batch_size == 1 and augment in ("none", "basic") and batch_norm:
        raise ValueError(
            f"{_options.arg('batch_size', 1)} with {_options.arg('augment', augment)} runs "
            f"{config.backbone} on one image per step, "
            f"and its BatchNorm layers cannot normalise a single image: use batch_size >= 2 (a "
            f"mixing method runs three images per anchor)."
        )
