"""Reading patches batch by batch: slices of arrays in memory, DataLoader workers for stores."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def is_lazy(array) -> bool:
    """Whether ``array`` is read from disk on demand (a dask array, a zarr array)."""
    return not isinstance(array, (np.ndarray, torch.Tensor))


def default_workers() -> int:
    """DataLoader workers for lazy patches: up to four, fewer on small machines."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class _Slices(Dataset):
    """Consecutive rows of an array, one batch per item (read in the worker)."""

    def __init__(self, array, batch_size: int):
        self.array, self.batch_size = array, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.array) / self.batch_size)

    def __getitem__(self, item: int) -> torch.Tensor:
        rows = self.array[item * self.batch_size : (item + 1) * self.batch_size]
        return torch.from_numpy(np.ascontiguousarray(np.asarray(rows)))


def synchronous_dask(_: int = 0) -> None:
    """Workers compute dask graphs themselves (no thread pool inside each worker)."""
    import dask

    dask.config.set(scheduler="synchronous")


def batches(array, batch_size: int, *, workers: int | None = None) -> Iterator[torch.Tensor]:
    """Consecutive batches of rows of ``array`` as tensors, in order.

    In-memory arrays are sliced; lazy ones are read by ``workers`` DataLoader workers, a few
    batches ahead, so memory holds a few batches at a time.
    """
    if isinstance(array, torch.Tensor):
        yield from torch.split(array, batch_size)
        return
    if not is_lazy(array):
        for start in range(0, len(array), batch_size):
            yield torch.as_tensor(np.ascontiguousarray(array[start : start + batch_size]))
        return
    workers = default_workers() if workers is None else workers
    loader = DataLoader(
        _Slices(array, batch_size),
        batch_size=None,
        num_workers=workers,
        worker_init_fn=synchronous_dask if workers else None,
        prefetch_factor=2 if workers else None,
    )
    yield from loader


class Rows:
    """Some rows of a lazy array, read one at a time on demand (in DataLoader workers).

    ``reader``, when given, reads a row of ``array`` faster (straight from its zarr stores).
    """

    def __init__(self, array, positions: np.ndarray, reader=None):
        self.array = array
        self.positions = np.asarray(positions)
        self.reader = reader

    def __len__(self) -> int:
        return len(self.positions)

    def read(self, item: int) -> np.ndarray:
        """Row ``item`` (of ``positions``) as a NumPy array."""
        row = int(self.positions[item])
        return np.asarray(self.array[row] if self.reader is None else self.reader[row])
