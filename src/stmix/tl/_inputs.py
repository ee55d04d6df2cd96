"""Where a training run's inputs live: held on the device, or read from a patch store.

Each kind is a :class:`~lightning.pytorch.LightningDataModule` with the same small interface, so
the plan that trains on it (:class:`~stmix.tl._imputer_plan.ImputerPlan`) reads both alike:

- :class:`HeldInputs`: patches or embeddings as tensors, moved to the device once; batches are
  indices into them, and a step indexes them there (no DataLoader workers between the data and
  the device).
- :class:`StoredInputs`: patches in a store (:class:`~stmix.tl._batches.Rows`), read item by
  item by DataLoader workers, which for mixing methods also draw each anchor's partner (from all
  training spots, seeded from the seed, the epoch and the anchor, so the draws do not depend on
  the number of workers) and read its patch.

Both shard the training items across processes with a seeded shuffle (:func:`shard`) and drop
a last batch of a single item (BatchNorm cannot normalise one image; the item is in a full batch
the next epoch, as the order is drawn anew).
"""

from __future__ import annotations

import lightning.pytorch as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from stmix.nn.augment import Augmentation, Step
from stmix.tl._batches import Rows, synchronous_dask


def shard(n: int, trainer, seed: int, *, shuffle: bool, kind: type = DistributedSampler):
    """The share of ``n`` items for this process of ``trainer`` (seeded shuffle, or in order)."""
    return kind(
        range(n),
        num_replicas=trainer.world_size,
        rank=trainer.global_rank,
        shuffle=shuffle,
        seed=seed,
    )


def single_last(sampler, batch_size: int) -> bool:
    """Whether the last batch of ``sampler``'s items would hold one item (it is dropped then)."""
    return batch_size > 1 and len(sampler) % batch_size == 1


def train_indices(n: int, batch_size: int, trainer, seed: int) -> DataLoader:
    """Shuffled batches of training indices; each process gets its own shard."""
    sampler = shard(n, trainer, seed, shuffle=True)
    return DataLoader(
        range(n), batch_size=batch_size, sampler=sampler, drop_last=single_last(sampler, batch_size)
    )


def val_indices(n: int, batch_size: int, trainer, seed: int) -> DataLoader:
    """Validation indices in order, sharded across processes."""
    sampler = shard(n, trainer, seed, shuffle=False)
    return DataLoader(range(n), batch_size=max(batch_size, 256), sampler=sampler)


class HeldInputs(L.LightningDataModule):
    """Training and validation inputs as tensors, indexed on the device by batches of indices."""

    streamed = False
    pair_sampler = None  # partners are drawn in the step, on the device

    def __init__(self, train: Tensor, val: Tensor, *, batch_size: int, seed: int):
        super().__init__()
        self.train, self.val = train, val
        self.batch_size, self.seed = int(batch_size), int(seed)

    def place(self, device: torch.device) -> None:
        """Move the inputs to the device, once, when training starts."""
        self.train, self.val = self.train.to(device), self.val.to(device)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of training indices; each process gets its own shard."""
        return train_indices(len(self.train), self.batch_size, self.trainer, self.seed)

    def val_dataloader(self) -> DataLoader:
        """Validation indices in order, sharded across processes."""
        return val_indices(len(self.val), self.batch_size, self.trainer, self.seed)

    def step(self, batch: Tensor, augmentation: Augmentation, targets: Tensor) -> Step:
        """Partners drawn and mixed on the device from the anchors' indices."""
        return augmentation(batch, self.train, targets)

    def anchors(self, batch: Tensor) -> Tensor:
        """The training items of a batch."""
        return batch

    def val_inputs(self, batch: Tensor) -> Tensor:
        """The validation inputs of a batch."""
        return self.val[batch]

    def val_index(self, batch: Tensor) -> Tensor:
        """The validation items of a batch."""
        return batch


class StoredInputs(L.LightningDataModule):
    """Patches in a store, read (with their partners, for mixing) by DataLoader workers."""

    streamed = True

    def __init__(
        self,
        train: Rows,
        val: Rows,
        *,
        batch_size: int,
        seed: int,
        workers: int,
        pair_sampler=None,
    ):
        super().__init__()
        self.train, self.val = train, val
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.pair_sampler = pair_sampler  # stays on the CPU, where the patches are read
        self.workers = int(workers)

    def place(self, device: torch.device) -> None:
        """Nothing moves: the workers read each batch."""

    def train_dataloader(self) -> DataLoader:
        """Anchors (and partners) read by workers kept across epochs; sharded across processes."""
        sampler = shard(len(self.train), self.trainer, self.seed, shuffle=True, kind=_EpochIndices)
        return DataLoader(
            _Pairs(self.train, self.pair_sampler, self.seed),
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=single_last(sampler, self.batch_size),
            **self.reading(),
        )

    def val_dataloader(self) -> DataLoader:
        """Validation patches read by workers, in order, sharded across processes."""
        return DataLoader(
            _Spots(self.val),
            batch_size=max(self.batch_size, 64),
            sampler=shard(len(self.val), self.trainer, self.seed, shuffle=False),
            **self.reading(),
        )

    def reading(self) -> dict:
        """DataLoader settings for reading a store: workers kept across epochs."""
        return {
            "num_workers": self.workers,
            "worker_init_fn": synchronous_dask if self.workers else None,
            "persistent_workers": self.workers > 0,
        }

    def step(self, batch: dict, augmentation: Augmentation, targets: Tensor) -> Step:
        """Mix the patches the workers read, with the targets of anchors and partners."""
        if "partners" not in batch:
            return augmentation.make(batch["x_i"], targets[batch["anchors"]])
        return augmentation.make(
            batch["x_i"],
            batch["x_j"],
            targets[batch["anchors"]],
            targets[batch["partners"]],
            batch["edge"].float(),
            batch["partners"],
        )

    def anchors(self, batch: dict) -> Tensor:
        """The training items of a batch."""
        return batch["anchors"]

    def val_inputs(self, batch: dict) -> Tensor:
        """The validation patches of a batch."""
        return batch["x"]

    def val_index(self, batch: dict) -> Tensor:
        """The validation items of a batch."""
        return batch["index"]


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
