"""One progress bar over epochs, with the loss, the validation MSE and the best epoch."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import ProgressBar
from tqdm.auto import tqdm


class EpochProgressBar(ProgressBar):
    """A tqdm bar that advances once per epoch (on the first process only).

    Lightning's own bar advances per step and reads the loss from the device at every refresh;
    this one reads the epoch's record once, when the epoch ends.
    """

    def __init__(self, desc: str = "fit"):
        super().__init__()
        self.desc = desc
        self._enabled = True
        self._bar: tqdm | None = None

    def disable(self) -> None:
        """Show nothing (Lightning calls this on processes other than the first)."""
        self._enabled = False

    def enable(self) -> None:
        """Show the bar."""
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Open the bar at the epoch training starts from (later than 0 when resuming)."""
        self._bar = tqdm(
            total=trainer.max_epochs,
            initial=trainer.current_epoch,
            desc=self.desc,
            unit="epoch",
            disable=not (self._enabled and trainer.is_global_zero),
            dynamic_ncols=True,
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        """Advance by one epoch and show its record (the plan closes it here, on every process)."""
        row = pl_module.close_epoch()
        if self._bar is None or row is None:
            return
        postfix = {"loss": f"{row.get('train_total', math.nan):.4f}"}
        if "val_mse" in row:
            postfix["val_mse"] = f"{row['val_mse']:.4f}"
        postfix["best"] = pl_module.best_epoch
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Close the bar when training fails or is interrupted."""
        self.on_train_end(trainer, pl_module)
