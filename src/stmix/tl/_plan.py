"""What every stmix training run shares, as one LightningModule: the training plan.

A plan trains one network (:attr:`TrainingPlan.model`, a plain ``nn`` module) on batches of
*indices*: the data (patches, expression) is held by the plan and moved to the device once, and a
step indexes it there, so no DataLoader workers or per-item Python sit between the data and the
device. The plan keeps, across processes and checkpoints,

- the **history**: one row per epoch with the mean of each training loss term, the validation
  scores, the learning rate and the seconds the epoch took;
- the **best weights**: those of the epoch with the lowest validation score (strictly lower: on
  a tie the earlier epoch stays best), restored when training ends; without validation data, the
  last epoch's.

Subclasses say what a step's losses are (:meth:`TrainingPlan.losses`, or
:meth:`TrainingPlan.outputs` with what callbacks see of the step) and how to score the
validation data (:meth:`TrainingPlan.predict` and :meth:`TrainingPlan.score`).

Randomness: before every training step torch's global generator is seeded from
``(seed, epoch, step, process rank)``, and batches are shuffled from ``(seed, epoch)``. A run is
repeatable on one device, a run resumed from a checkpoint continues exactly as the uninterrupted
run would have (whatever Lightning draws between steps), and the processes of a multi-process
run draw different partners.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from stmix import _options
from stmix.tl._inputs import train_indices, val_indices
from stmix.tl._quiet import quiet


class TrainingPlan(L.LightningModule):
    """Batches of indices, per-epoch records and best weights around ``model``.

    Parameters
    ----------
    model
        The network to train (its parameters are the ones optimised).
    n_train, n_val
        Number of training and validation items; batches are index tensors into them.
    batch_size
        Training items per step and process.
    lr, min_lr, weight_decay, betas, eps
        AdamW, with the learning rate annealed on a cosine from ``lr`` to ``min_lr`` over all
        steps.
    seed
        Seeds the batch order and, epoch by epoch, torch's global generator.
    monitor
        Validation score whose minimum chooses the best epoch (``val_<monitor>`` in the history).
    fingerprint
        What must match for a checkpoint to resume this run (checked on load).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        n_train: int,
        n_val: int,
        batch_size: int,
        lr: float,
        min_lr: float,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        seed: int = 0,
        monitor: str = "mse",
        fingerprint: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.model = model
        self.n_train, self.n_val = int(n_train), int(n_val)
        self.batch_size = int(batch_size)
        self.optimiser_settings = {
            "lr": float(lr),
            "min_lr": float(min_lr),
            "weight_decay": float(weight_decay),
            "betas": tuple(betas),
            "eps": float(eps),
        }
        self.seed = int(seed)
        self.monitor = monitor
        self.fingerprint = dict(fingerprint or {})
        self.history: list[dict[str, float]] = []
        self.best_epoch = 0
        self.best_score = math.inf
        self._best_state: dict[str, Tensor] | None = None
        self._sums: dict[str, Tensor] = {}
        self._steps = 0
        self._epoch_started = 0.0
        self._val_parts: list[tuple[Tensor, Tensor]] = []
        self._val_scores: dict[str, float] | None = None
        self._open = False

    # ---- what a subclass provides -------------------------------------------------------

    @abstractmethod
    def losses(self, batch: Tensor) -> dict[str, Tensor] | None:
        """Loss terms of a training batch (``total`` first), or ``None`` to skip the step."""

    @abstractmethod
    def predict(self, batch: Tensor) -> Tensor:
        """Network output for a batch of validation indices."""

    @abstractmethod
    def score(self, pred: Tensor) -> dict[str, float]:
        """Validation scores of the predictions for all validation items, in index order."""

    def extras(self, batch: Tensor) -> dict[str, Tensor]:
        """Extra tensors of a training step handed to callbacks (``on_train_batch_end``)."""
        return {}

    # ---- every process ------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Quiet Lightning in this process too (spawned processes do not inherit the caller's)."""
        self._quiet = quiet()
        self._quiet.__enter__()

    def teardown(self, stage: str) -> None:
        """Undo :meth:`setup`'s quieting."""
        quieted = getattr(self, "_quiet", None)
        if quieted is not None:
            self._quiet = None
            quieted.__exit__(None, None, None)

    # ---- data ---------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of training indices; each process gets its own shard.

        A last batch of a single item is dropped (BatchNorm cannot normalise one image; the
        item is in a full batch the next epoch, as the order is drawn anew).
        """
        return train_indices(self.n_train, self.batch_size, self.trainer, self.seed)

    def val_dataloader(self) -> DataLoader:
        """Validation indices in order, sharded across processes."""
        return val_indices(self.n_val, self.batch_size, self.trainer, self.seed)

    def datamodule(self) -> L.LightningDataModule | None:
        """The data module to train on, or ``None``: the plan's own batches of indices."""
        return None

    # ---- optimisation -------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with cosine annealing per step, as in the paper."""
        settings = self.optimiser_settings
        optimiser = torch.optim.AdamW(
            self.model.parameters(),
            lr=settings["lr"],
            betas=settings["betas"],
            eps=settings["eps"],
            weight_decay=settings["weight_decay"],
        )
        steps = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimiser, T_max=steps, eta_min=settings["min_lr"]
        )
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_epoch_start(self) -> None:
        """Start the epoch's record."""
        self._sums, self._steps = {}, 0
        self._val_scores = None
        self._epoch_started = time.perf_counter()
        self._open = True

    def training_step(self, batch: Tensor, batch_idx: int) -> dict[str, Tensor] | None:
        """The step's losses; the terms are summed on the device for the epoch's record."""
        torch.manual_seed(_step_seed(self.seed, self.current_epoch, batch_idx, self.global_rank))
        losses, extras = self.outputs(batch)
        if losses is None:
            return None
        for key, value in losses.items():
            value = value.detach()
            self._sums[key] = self._sums[key] + value if key in self._sums else value
        self._steps += 1
        return {"loss": losses["total"], **extras}

    def outputs(self, batch: Tensor) -> tuple[dict[str, Tensor] | None, dict[str, Tensor]]:
        """A training step's loss terms (:meth:`losses`) and its extras (:meth:`extras`)."""
        losses = self.losses(batch)
        return losses, ({} if losses is None else self.extras(batch))

    # ---- validation ---------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        """Start collecting this round's predictions."""
        self._val_parts = []

    def validation_index(self, batch) -> Tensor:
        """The validation items a batch holds (the batch itself: an index tensor)."""
        return batch

    def validation_step(self, batch, batch_idx: int) -> None:
        """Predict a batch of validation items."""
        self._val_parts.append((self.validation_index(batch), self.predict(batch).float()))

    def on_validation_epoch_end(self) -> None:
        """Score all validation items (gathered from every process) and log ``val_<monitor>``."""
        index = torch.cat([i for i, _ in self._val_parts])
        pred = torch.cat([p for _, p in self._val_parts])
        # every process's predictions (all_gather is the identity in one process)
        index = self.all_gather(index).reshape(-1)
        pred = self.all_gather(pred).reshape(-1, *pred.shape[1:])
        scores = self.score(in_index_order(index, pred))
        self._val_scores = scores
        self._val_parts = []
        # every process computed the same scores from the same gathered predictions; the mean
        # across processes (sync_dist) changes nothing and keeps Lightning from warning
        distributed = self.trainer.world_size > 1
        self.log(f"val_{self.monitor}", scores[self.monitor], sync_dist=distributed)

    # ---- the epoch's record and the best weights ---------------------------------------

    def close_epoch(self) -> dict[str, float] | None:
        """Record the epoch that just ended (once; later calls return the same row).

        Called by the progress bar and by :meth:`on_train_epoch_end`, whichever comes first, on
        every process (the loss terms are averaged across processes).
        """
        if not self._open:
            return self.history[-1] if self.history else None
        self._open = False
        steps = torch.tensor(float(max(self._steps, 1)), device=self.device)
        names = list(self._sums)  # the loss's order: the first broken term is named
        if names:
            stacked = torch.stack([self._sums[k].float() for k in names]) / steps
            # the mean across processes (the identity in one process)
            stacked = self.trainer.strategy.reduce(stacked, reduce_op="mean")
            terms = dict(zip(names, stacked.cpu().tolist(), strict=True))  # one sync per epoch
        else:
            terms = {}
        epoch = self.current_epoch + 1
        _check_finite(terms, epoch)
        row: dict[str, float] = {"epoch": epoch, **{f"train_{k}": v for k, v in terms.items()}}
        if self._val_scores is not None:
            row.update({f"val_{k}": float(v) for k, v in self._val_scores.items()})
        row["lr"] = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        row["seconds"] = time.perf_counter() - self._epoch_started
        self.history.append(row)
        score = row.get(f"val_{self.monitor}", -float(epoch))  # without validation: the last
        if score < self.best_score:
            self.best_score, self.best_epoch = float(score), epoch
            self._best_state = _cpu_copy(self.model.state_dict())
        return row

    def on_train_epoch_end(self) -> None:
        """Close the epoch's record (if the progress bar has not)."""
        self.close_epoch()

    def start_from(self, score: float) -> None:
        """Count the untrained model as epoch 0 with validation score ``score``.

        Training then keeps the starting weights unless an epoch scores strictly lower.
        """
        if not self.history:
            self.history.append({"epoch": 0, f"val_{self.monitor}": float(score)})
            self.best_score, self.best_epoch = float(score), 0
            self._best_state = _cpu_copy(self.model.state_dict())

    def on_fit_end(self) -> None:
        """Leave the network with the best epoch's weights."""
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)

    # ---- what survives processes and checkpoints ---------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        """History and best epoch travel in the state dict (back from spawned processes too)."""
        return {
            "history": [dict(row) for row in self.history],
            "best_epoch": int(self.best_epoch),
            "best_score": float(self.best_score),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self.history = [dict(row) for row in state["history"]]
        self.best_epoch = int(state["best_epoch"])
        self.best_score = float(state["best_score"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint also holds the best weights so far and what this run trains on."""
        checkpoint["stmix"] = {"best_state": self._best_state, "fingerprint": self.fingerprint}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another run; restore the best weights so far."""
        saved = checkpoint.get("stmix")
        if saved is None:
            raise ValueError("The checkpoint was not written by stmix.tl.fit or stmix.tl.complete.")
        theirs, ours = _flat(saved.get("fingerprint", {})), _flat(self.fingerprint)
        different = sorted(
            key for key in set(theirs) | set(ours) if theirs.get(key) != ours.get(key)
        )
        if different:
            key = different[0]
            also = f" (also: {', '.join(different[1:6])})" if len(different) > 1 else ""
            raise ValueError(
                f"The checkpoint belongs to another training run: its {key!r} is "
                f"{theirs.get(key)!r}, this run's is {ours.get(key)!r}{also}. Resume with the "
                f"same data and settings."
            )
        self._best_state = saved.get("best_state")


def in_index_order(index: Tensor, pred: Tensor) -> Tensor:
    """``pred`` sorted by ``index``, once per item: the sampler pads shards with repeats."""
    order = torch.argsort(index, stable=True)
    index, pred = index[order], pred[order]
    keep = torch.ones_like(index, dtype=torch.bool)
    keep[1:] = index[1:] != index[:-1]
    return pred[keep]


def _flat(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """``fingerprint`` with its nested settings named by their own keys (``epochs``, ``lr``)."""
    flat = {}
    for key, value in fingerprint.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}" if k in fingerprint else k: v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1)[0])


def _cpu_copy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key: value.detach().to("cpu", copy=True) for key, value in state.items()}


def _check_finite(terms: dict[str, float], epoch: int) -> None:
    # name the first broken component, not the total it spoils
    for key in sorted(terms, key=lambda k: k == "total"):
        if not math.isfinite(terms[key]):
            raise FloatingPointError(
                f"Training stopped at epoch {epoch}: the {key!r} loss term is {terms[key]}. "
                f"Lower {_options.name('lr')}, check the expression for extreme values, or lower "
                f"`loss_weights`."
            )
