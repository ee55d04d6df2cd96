"""The training plan of the image-to-expression network."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from stmix import _metrics
from stmix.nn.augment import Augmentation
from stmix.nn.head import ExpressionHead
from stmix.nn.images import to_input
from stmix.nn.model import ExpressionPredictor
from stmix.tl._plan import TrainingPlan


class ImputerPlan(TrainingPlan):
    """Train an image network or a head on embeddings with an ``augment=`` method.

    The network is an :class:`~stmix.nn.ExpressionPredictor` (inputs: uint8 patches) or an
    :class:`~stmix.nn.ExpressionHead` (inputs: float embeddings). Inputs and targets move to the
    device once, when training starts. A step indexes them with the batch of anchors, lets the
    augmentation draw partners and mix on the device, and runs the network once on the stacked
    batch; Lightning's precision plugin supplies the autocast (bf16 on CUDA).

    Parameters
    ----------
    model
        The network.
    augmentation
        Turns anchors into a :class:`~stmix.nn.Step`.
    train_patches, train_targets
        uint8 patches (n, size, size, 3) or float32 embeddings (n, d), and float32 targets
        (n, genes), of the training spots (CPU tensors).
    val_patches, val_targets
        The same for the validation spots (possibly empty).
    **settings
        :class:`~stmix.tl._plan.TrainingPlan`'s batch size, optimiser settings, seed and
        fingerprint.
    """

    def __init__(
        self,
        model: ExpressionPredictor | ExpressionHead,
        augmentation: Augmentation,
        train_patches: Tensor,
        train_targets: Tensor,
        val_patches: Tensor,
        val_targets: Tensor,
        **settings: Any,
    ):
        super().__init__(model, n_train=len(train_patches), n_val=len(val_patches), **settings)
        self.augmentation = augmentation
        self.train_patches, self.train_targets = train_patches, train_targets
        self.val_patches = val_patches
        self.val_truth = val_targets.numpy().astype(np.float64)

    def setup(self, stage: str) -> None:
        """Channels-last weights on CUDA and under DDP (before DDP wraps the network).

        Patches reach the network as channels-last views (:func:`~stmix.nn.to_float`): on CUDA
        that layout is the fastest, and under DDP the weights must share it, or the gradients do
        not match DDP's buckets.
        """
        super().setup(stage)
        if self.trainer.strategy.root_device.type == "cuda" or self.trainer.world_size > 1:
            self.model.to(memory_format=torch.channels_last)

    def on_fit_start(self) -> None:
        """Move the data and the sampler's tables to the device, once."""
        device = self.device
        self.augmentation = self.augmentation.to(device)
        self.train_patches = self.train_patches.to(device)
        self.train_targets = self.train_targets.to(device)
        self.val_patches = self.val_patches.to(device)

    def losses(self, batch: Tensor) -> dict[str, Tensor]:
        """Partners, mixing and one backbone call on the stacked batch."""
        self._step = step = self.augmentation(batch, self.train_patches, self.train_targets)
        return step.loss(self.model(step.inputs))

    def extras(self, batch: Tensor) -> dict[str, Tensor]:
        """The anchors, and for mixing methods the partners and mixing ratios."""
        step = self._step
        out = {"anchors": batch}
        if step.partners is not None:
            out.update(partners=step.partners, lam=step.lam)
        return out

    def predict(self, batch: Tensor) -> Tensor:
        """Predicted expression of validation spots."""
        return self.model(to_input(self.val_patches[batch]))

    def score(self, pred: Tensor) -> dict[str, float]:
        """MSE, MAE and mean per-gene Pearson correlation on the validation spots."""
        return _metrics.summary(_metrics.gene_metrics(self.val_truth, pred.cpu().numpy()))
