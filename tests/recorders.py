"""Callbacks for the training tests: recorders of what steps hand on, and a raised error.

Module-level, so spawned processes can import them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback

KEYS = ("anchors", "partners", "lam")


class Recorder(Callback):
    """Keeps what each training step hands to callbacks: anchors, partners, mixing ratios."""

    def __init__(self):
        self.steps: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if outputs is None:
            return
        row = {"epoch": trainer.current_epoch, "step": batch_idx}
        for key in KEYS:
            if key in outputs:
                row[key] = outputs[key].detach().cpu().numpy().copy()
        self.steps.append(row)

    def by_epoch(self, key: str) -> list[np.ndarray]:
        epochs = sorted({row["epoch"] for row in self.steps})
        return [
            np.concatenate([row[key] for row in self.steps if row["epoch"] == e]) for e in epochs
        ]


class FileRecorder(Recorder):
    """A :class:`Recorder` that writes each process's steps to ``folder/rank<r>.npz``."""

    def __init__(self, folder):
        super().__init__()
        self.folder = str(folder)

    def on_train_end(self, trainer, pl_module):
        out = {}
        for key in KEYS:
            if any(key in row for row in self.steps):
                for epoch, values in enumerate(self.by_epoch(key)):
                    out[f"{key}_{epoch}"] = values
        np.savez(Path(self.folder) / f"rank{trainer.global_rank}.npz", **out)


class Outputs(Callback):
    """Every training step's outputs as handed to callbacks, with the epoch: ``(epoch, dict)``."""

    def __init__(self):
        self.steps: list[tuple[int, dict]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((trainer.current_epoch, dict(outputs)))


class Raise(Callback):
    """Raise ``error`` at the end of epoch ``epoch`` (a KeyboardInterrupt: Ctrl+C)."""

    def __init__(self, error: BaseException, epoch: int = 1):
        self.error, self.epoch = error, epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 == self.epoch:
            raise self.error
