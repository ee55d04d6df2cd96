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
from stmix.tl._batches import Rows, default_workers
from stmix.tl._inputs import HeldInputs, StoredInputs
from stmix.tl._plan import TrainingPlan


class ImputerPlan(TrainingPlan):
    """Train an image network or a head on embeddings with an ``augment=`` method.

    The network is an :class:`~stmix.nn.ExpressionPredictor` (inputs: uint8 patches) or an
    :class:`~stmix.nn.ExpressionHead` (inputs: float embeddings). Targets move to the device
    once, when training starts; the inputs are a data module (:mod:`stmix.tl._inputs`): tensors
    held on the device and indexed by the step (:class:`~stmix.tl._inputs.HeldInputs`), or rows
    of a patch store read by DataLoader workers (:class:`~stmix.tl._inputs.StoredInputs`). A
    step lets the augmentation draw partners and mix on the device, and runs the network once
    on the stacked batch; Lightning's precision plugin supplies the autocast (bf16 on CUDA).

    Parameters
    ----------
    model
        The network.
    augmentation
        Turns anchors into a :class:`~stmix.nn.Step`.
    train_patches, train_targets
        uint8 patches (n, size, size, 3) or float32 embeddings (n, d) of the training spots (CPU
        tensors, or rows of a patch store), and their float32 targets (n, genes).
    val_patches, val_targets
        The same for the validation spots (possibly empty).
    workers
        DataLoader workers reading patches from a store (default: up to four).
    **settings
        :class:`~stmix.tl._plan.TrainingPlan`'s batch size, optimiser settings, seed and
        fingerprint.
    """

    def __init__(
        self,
        model: ExpressionPredictor | ExpressionHead,
        augmentation: Augmentation,
        train_patches: Tensor | Rows,
        train_targets: Tensor,
        val_patches: Tensor | Rows,
        val_targets: Tensor,
        workers: int | None = None,
        **settings: Any,
    ):
        super().__init__(model, n_train=len(train_patches), n_val=len(val_patches), **settings)
        self.augmentation = augmentation
        self.train_targets = train_targets
        self.val_truth = val_targets.numpy().astype(np.float64)
        self.workers = default_workers() if workers is None else int(workers)
        shared = {"batch_size": self.batch_size, "seed": self.seed}
        if isinstance(train_patches, Rows):
            sampler = getattr(augmentation, "sampler", None)
            self.data = StoredInputs(
                train_patches, val_patches, pair_sampler=sampler, workers=self.workers, **shared
            )
        else:
            self.data = HeldInputs(train_patches, val_patches, **shared)

    @property
    def streaming(self) -> bool:
        """Whether the inputs are read from a store by DataLoader workers."""
        return self.data.streamed

    @property
    def pair_sampler(self):
        """The sampler the DataLoader workers draw partners with (``None``: drawn in the step)."""
        return self.data.pair_sampler

    def datamodule(self) -> HeldInputs | StoredInputs:
        """The inputs, held on the device or read from a store."""
        return self.data

    def setup(self, stage: str) -> None:
        """Channels-last weights on CUDA and under DDP (before DDP wraps the network).

        Patches reach the network as channels-last views (:func:`~stmix.nn.to_float`): on CUDA
        that layout is the fastest, and under DDP the weights must share it, or the gradients do
        not match DDP's buckets.
        """
        super().setup(stage)
        if wants_channels_last(self.trainer.strategy.root_device.type, self.trainer.world_size):
            self.model.to(memory_format=torch.channels_last)

    def on_fit_start(self) -> None:
        """Move the targets, the sampler's tables and held inputs to the device, once."""
        device = self.device
        self.augmentation = self.augmentation.to(device)
        self.train_targets = self.train_targets.to(device)
        self.data.place(device)

    def outputs(self, batch: Tensor | dict) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Partners, mixing and one network call on the stacked batch; the step's draws.

        The extras are the anchors and, for mixing methods, the partners and mixing ratios.
        """
        step = self.data.step(batch, self.augmentation, self.train_targets)
        extras = {"anchors": self.data.anchors(batch)}
        if step.partners is not None:
            extras.update(partners=step.partners, lam=step.lam)
        return step.loss(self.model(step.inputs)), extras

    def predict(self, batch: Tensor | dict) -> Tensor:
        """Predicted expression of validation spots."""
        return self.model(to_input(self.data.val_inputs(batch)))

    def validation_index(self, batch: Tensor | dict) -> Tensor:
        """The validation items of a batch."""
        return self.data.val_index(batch)

    def score(self, pred: Tensor) -> dict[str, float]:
        """MSE, MAE and mean per-gene Pearson correlation on the validation spots."""
        return _metrics.summary(_metrics.gene_metrics(self.val_truth, pred.cpu().numpy()))


def wants_channels_last(device_type: str, world_size: int) -> bool:
    """Whether a fit on ``device_type`` with ``world_size`` processes needs channels-last weights.

    On CUDA that layout is the fastest for the channels-last patches; under DDP the weights must
    share the patches' layout for the gradients to match DDP's buckets. A single CPU process
    keeps the default layout.
    """
    return device_type == "cuda" or world_size > 1
