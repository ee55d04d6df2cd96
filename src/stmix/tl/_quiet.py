"""Keeping Lightning quiet: stmix shows its own progress bar and logs through ``logging``."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

from stmix._loggers import held_back


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Lightning's banners and the warnings that do not apply to stmix's training, off."""
    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
    with held_back(*names), warnings.catch_warnings():
        # the data sit on the device and batches are index tensors: workers would only cost
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists.*")
        # raised inside Lightning by newer torch versions; nothing a user can act on
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
        warnings.filterwarnings("ignore", message=".*distributed.nn.functional.all_gather.*")
        yield
