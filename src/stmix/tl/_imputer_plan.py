"""The training plan of the image-to-expression network."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from stmix import _metrics
from stmix.nn.augment import Augmentation
from stmix.nn.head import ExpressionHead
from stmix.nn.images import to_input
from stmix.nn.model import ExpressionPredictor
from stmix.tl._batches import Rows, default_workers, synchronous_dask
from stmix.tl._plan import TrainingPlan


class ImputerPlan(TrainingPlan):
    """Train an image network or a head on embeddings with an ``augment=`` method.

    The network is an :class:`~stmix.nn.ExpressionPredictor` (inputs: uint8 patches) or an
    :class:`~stmix.nn.ExpressionHead` (inputs: float embeddings). Inputs and targets move to the
    device once, when training starts. A step indexes them with the batch of anchors, lets the
    augmentation draw partners and mix on the device, and runs the network once on the stacked
    batch; Lightning's precision plugin supplies the autocast (bf16 on CUDA).

    With patches in a store (``train_patches`` a :class:`~stmix.tl._batches.Rows`), nothing is
    moved to the device whole: DataLoader workers read each anchor's patch and, for mixing
    methods, draw its partner (from all training spots, with the same sampler, seeded from the
    seed, the epoch and the anchor, so the draws do not depend on the number of workers) and
    read that patch too; the step mixes them on the device.

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
        train_patches: Tensor,
        train_targets: Tensor,
        val_patches: Tensor | Rows,
        val_targets: Tensor,
        workers: int | None = None,
        **settings: Any,
    ):
        super().__init__(model, n_train=len(train_patches), n_val=len(val_patches), **settings)
        self.augmentation = augmentation
        self.train_patches, self.train_targets = train_patches, train_targets
        self.val_patches = val_patches
        self.val_truth = val_targets.numpy().astype(np.float64)
        self.streaming = isinstance(train_patches, Rows)
        self.workers = default_workers() if workers is None else int(workers)
        # partners are drawn where the patches are read: the sampler stays on the CPU there
        self.pair_sampler = getattr(augmentation, "sampler", None) if self.streaming else None

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
        self.train_targets = self.train_targets.to(device)
        if not self.streaming:
            self.train_patches = self.train_patches.to(device)
            self.val_patches = self.val_patches.to(device)

    def losses(self, batch: Tensor | dict) -> dict[str, Tensor]:
        """Partners, mixing and one backbone call on the stacked batch."""
        if not self.streaming:
            step = self.augmentation(batch, self.train_patches, self.train_targets)
        elif "partners" in batch:  # read, with their partners, by the DataLoader workers
            y = self.train_targets
            step = self.augmentation.make(
                batch["x_i"],
                batch["x_j"],
                y[batch["anchors"]],
                y[batch["partners"]],
                batch["edge"].float(),
                batch["partners"],
            )
        else:
            step = self.augmentation.make(batch["x_i"], self.train_targets[batch["anchors"]])
        self._step = step
        return step.loss(self.model(step.inputs))

    def extras(self, batch: Tensor | dict) -> dict[str, Tensor]:
        """The anchors, and for mixing methods the partners and mixing ratios."""
        step = self._step
        out = {"anchors": batch["anchors"] if self.streaming else batch}
        if step.partners is not None:
            out.update(partners=step.partners, lam=step.lam)
        return out

    def predict(self, batch: Tensor | dict) -> Tensor:
        """Predicted expression of validation spots."""
        if self.streaming:
            return self.model(to_input(batch["x"]))
        return self.model(to_input(self.val_patches[batch]))

    def validation_index(self, batch: Tensor | dict) -> Tensor:
        """The validation items of a batch."""
        return batch["index"] if self.streaming else batch

    def train_dataloader(self) -> DataLoader:
        """Index batches (patches in memory), or pairs read from the store by workers."""
        if not self.streaming:
            return super().train_dataloader()
        sampler = self.shard(self.n_train, shuffle=True, kind=_EpochIndices)
        return DataLoader(
            _Pairs(self.train_patches, self.pair_sampler, self.seed),
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=self.single_last(sampler),
            **self.reading(),
        )

    def val_dataloader(self) -> DataLoader:
        """Validation indices (patches in memory), or their patches read by workers."""
        if not self.streaming:
            return super().val_dataloader()
        return DataLoader(
            _Spots(self.val_patches),
            batch_size=max(self.batch_size, 64),
            sampler=self.shard(self.n_val, shuffle=False),
            **self.reading(),
        )

    def reading(self) -> dict:
        """DataLoader settings for reading a store: workers kept across epochs."""
        return {
            "num_workers": self.workers,
            "worker_init_fn": synchronous_dask if self.workers else None,
            "persistent_workers": self.workers > 0,
        }

    def score(self, pred: Tensor) -> dict[str, float]:
        """MSE, MAE and mean per-gene Pearson correlation on the validation spots."""
        return _metrics.summary(_metrics.gene_metrics(self.val_truth, pred.cpu().numpy()))


class _EpochIndices(DistributedSampler):
    """A seeded shuffle of the training items that also hands out the epoch (for the draws)."""

    def __iter__(self):
        epoch = self.epoch
        return ((int(item), epoch) for item in super().__iter__())


class _Pairs(Dataset):
    """A training item read from a patch store: the anchor's patch, its partner's for mixing."""

    def __init__(self, rows: Rows, sampler, seed: int):
        self.rows, self.sampler, self.seed = rows, sampler, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        anchor, epoch = item
        out = {"anchors": anchor, "x_i": self.rows.read(anchor)}
        if self.sampler is not None:
            torch.manual_seed(
                int(np.random.SeedSequence([self.seed, epoch, anchor]).generate_state(1)[0])
            )
            partner, edge = self.sampler(torch.tensor([anchor]))
            out.update(
                partners=int(partner[0]), x_j=self.rows.read(int(partner[0])), edge=float(edge[0])
            )
        return out


class _Spots(Dataset):
    """Validation spots read from a patch store."""

    def __init__(self, rows: Rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> dict:
        return {"index": item, "x": self.rows.read(item)}
