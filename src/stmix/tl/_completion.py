"""Training the neighbourhood transformer that completes dropout values (self-supervised)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stmix.nn.completion import NeighbourhoodTransformer
from stmix.tl import _trainer
from stmix.tl._plan import TrainingPlan

logger = logging.getLogger(__name__)

#: Share of the observed entries held out to choose the epoch (never a training target).
VALIDATION_SHARE = 0.1


class CompletionPlan(TrainingPlan):
    """Teach a :class:`~stmix.nn.NeighbourhoodTransformer` to reconstruct hidden entries.

    Each step hides ``mask_prob`` of the trainable observed entries of a batch of centre spots
    (filled with the adaptive median, flagged missing), and as large a share of their neighbours'
    entries, and trains on the MSE at the hidden centre entries. Validation hides the validation
    entries of every spot and scores the MSE there; epoch 0 is the model before training (the
    recalibrated median), so training keeps it unless an epoch does strictly better.
    """

    def __init__(
        self,
        model: NeighbourhoodTransformer,
        x: np.ndarray,
        missing: np.ndarray,
        median: np.ndarray,
        validation: np.ndarray,
        index: np.ndarray,
        ring: np.ndarray,
        *,
        mask_prob: float,
        **settings: Any,
    ):
        super().__init__(model, n_train=len(x), n_val=len(x), **settings)
        self.mask_prob = float(mask_prob)
        self.tables = {
            "x": torch.as_tensor(x, dtype=torch.float32),
            "missing": torch.as_tensor(missing, dtype=torch.bool),
            "median": torch.as_tensor(median, dtype=torch.float32),
            "validation": torch.as_tensor(validation, dtype=torch.bool),
            "trainable": torch.as_tensor(~missing & ~validation, dtype=torch.bool),
            "index": torch.as_tensor(index, dtype=torch.long),
            "ring": torch.as_tensor(ring, dtype=torch.long),
        }

    def on_fit_start(self) -> None:
        """Move the tables to the device; score the untrained model as epoch 0."""
        self.tables = {k: v.to(self.device) for k, v in self.tables.items()}
        self.start_from(self.validation_mse())

    def inputs(self, centres: Tensor, hidden: Tensor, neighbour_hide: float = 0.0):
        """Model inputs for ``centres`` with the entries ``hidden`` of each centre hidden.

        ``neighbour_hide`` also hides that share of the neighbours' observed entries (training
        only), so the model cannot recognise a spot by its neighbours and recall its values.
        """
        t = self.tables
        neighbours = t["index"][centres]
        padding = torch.cat(
            [torch.zeros_like(neighbours[:, :1], dtype=torch.bool), neighbours < 0], dim=1
        )
        safe = neighbours.clamp(min=0)
        centre_values = torch.where(hidden, t["median"][centres], t["x"][centres])
        neighbour_flags = t["missing"][safe]
        if neighbour_hide:
            neighbour_flags = neighbour_flags | (
                torch.rand(neighbour_flags.shape, device=self.device) < neighbour_hide
            )
        # a neighbour's missing entries carry no value: their adaptive median would often be
        # the centre's own observed value, a shortcut that truly missing entries never offer
        neighbour_values = t["x"][safe].masked_fill(neighbour_flags, 0.0)
        values = torch.cat([centre_values[:, None], neighbour_values], dim=1)
        flags = torch.cat([hidden[:, None], neighbour_flags], dim=1)
        values = values.masked_fill(padding[..., None], 0.0)
        flags = flags & ~padding[..., None]
        rings = torch.cat([torch.zeros_like(centres)[:, None], t["ring"][centres]], dim=1)
        return values, flags, rings, padding, t["median"][centres]

    def losses(self, batch: Tensor) -> dict[str, Tensor] | None:
        """MSE at the randomly hidden trainable entries of the centre spots."""
        t = self.tables
        hide = torch.rand(len(batch), t["x"].shape[1], device=self.device) < self.mask_prob
        hide &= t["trainable"][batch]
        if not hide.any():
            return None
        pred = self.model(*self.inputs(batch, hide | t["missing"][batch], self.mask_prob))
        return {"total": (pred - t["x"][batch])[hide].square().mean()}

    def predict(self, batch: Tensor) -> Tensor:
        """Predictions with the missing and the validation entries hidden."""
        t = self.tables
        return self.model(*self.inputs(batch, t["missing"][batch] | t["validation"][batch]))

    def score(self, pred: Tensor) -> dict[str, float]:
        """MSE at the validation entries."""
        t = self.tables
        error = (pred - t["x"])[t["validation"]]
        return {"mse": float(error.square().mean()) if error.numel() else float("nan")}

    @torch.inference_mode()
    def validation_mse(self) -> float:
        """Score the model as it is now, outside the Trainer's loop."""
        was_training = self.model.training
        self.model.eval()
        n = len(self.tables["x"])
        batches = [torch.arange(s, min(s + 256, n), device=self.device) for s in range(0, n, 256)]
        pred = torch.cat([self.predict(batch) for batch in batches])
        self.model.train(was_training)
        return self.score(pred)["mse"]

    @torch.inference_mode()
    def complete(self) -> np.ndarray:
        """Predictions for every entry with only the truly missing ones hidden."""
        was_training = self.model.training
        self.model.eval()
        t = self.tables
        n = len(t["x"])
        out = []
        for start in range(0, n, 256):
            centres = torch.arange(start, min(start + 256, n), device=self.device)
            out.append(self.model(*self.inputs(centres, t["missing"][centres])))
        self.model.train(was_training)
        return torch.cat(out).cpu().numpy()


def complete_with_transformer(
    x: np.ndarray,
    missing: np.ndarray,
    median: np.ndarray,
    index: np.ndarray,
    ring: np.ndarray,
    *,
    n_rings: int,
    mask_prob: float,
    epochs: int,
    batch_size: int,
    lr: float,
    d_model: int,
    n_heads: int,
    n_layers: int,
    seed: int,
    progress: bool,
    accelerator: str = "auto",
    devices: int | str | list[int] = 1,
    **trainer_kwargs: Any,
) -> tuple[np.ndarray, list[dict], int]:
    """The completed matrix, the training history (row 0: the recalibrated median), the best epoch.

    10% of the observed entries are never targets: the epoch with the lowest MSE on them, hidden,
    is kept, so the result is never chosen on the entries it learnt from.
    """
    torch.manual_seed(seed)
    validation = validation_entries(~missing, seed)
    model = NeighbourhoodTransformer(
        x.shape[1], n_rings, d_model=d_model, n_heads=n_heads, n_layers=n_layers
    )
    scale, shift = recalibration(x, median, ~missing & ~validation)
    with torch.no_grad():  # start from the median recalibrated gene by gene (least squares)
        model.gene_scale.copy_(torch.as_tensor(scale - 1.0))
        model.gene_shift.copy_(torch.as_tensor(shift))
    plan = CompletionPlan(
        model,
        x,
        missing,
        median,
        validation,
        index,
        ring,
        mask_prob=mask_prob,
        batch_size=batch_size,
        lr=lr,
        min_lr=0.0,
        weight_decay=1e-4,
        seed=seed,
    )
    if epochs > 0:
        _trainer.run(
            plan,
            epochs=epochs,
            patience=None,
            accelerator=accelerator,
            devices=devices,
            progress=progress,
            desc="complete",
            **trainer_kwargs,
        )
    else:
        plan.start_from(plan.validation_mse())
    logger.info(
        "Completion: validation MSE %.4f (recalibrated median %.4f), best of %d epochs: %d.",
        plan.best_score,
        plan.history[0]["val_mse"],
        epochs,
        plan.best_epoch,
    )
    pred = plan.complete()
    return np.where(missing, pred, x).astype(np.float32), plan.history, plan.best_epoch


def validation_entries(observed: np.ndarray, seed: int) -> np.ndarray:
    """Exactly :data:`VALIDATION_SHARE` of the observed entries (at least one), at random.

    Drawn from its own random stream, so a caller who hid entries with the same seed does not
    get an empty validation set.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    candidates = np.flatnonzero(observed)
    count = max(1, round(VALIDATION_SHARE * len(candidates)))
    chosen = rng.choice(candidates, size=min(count, len(candidates)), replace=False)
    validation = np.zeros(observed.shape, dtype=bool)
    validation.flat[chosen] = True
    return validation


def recalibration(
    x: np.ndarray, median: np.ndarray, entries: np.ndarray, ridge: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene least squares ``x ≈ scale · median + shift`` over ``entries``.

    The adaptive median of a few noisy neighbours is too extreme when little is observed;
    regressing the true values on it shrinks it towards the gene's typical level. A small ridge
    keeps genes with a nearly constant median well posed; genes without entries keep (1, 0).
    """
    n_genes = x.shape[1]
    scale, shift = np.ones(n_genes), np.zeros(n_genes)
    for gene in range(n_genes):
        rows = entries[:, gene]
        if rows.sum() < 3:
            continue
        m, y = median[rows, gene].astype(np.float64), x[rows, gene].astype(np.float64)
        mc = m - m.mean()
        scale[gene] = (mc @ (y - y.mean())) / (mc @ mc + ridge * len(m))
        shift[gene] = y.mean() - scale[gene] * m.mean()
    return scale.astype(np.float32), shift.astype(np.float32)
