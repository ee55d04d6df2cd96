"""The training loop: device-resident patches, one backbone call per step, early stopping."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from stmix.nn.augment import Augmentation
from stmix.nn.metrics import gene_metrics, summary
from stmix.nn.model import ExpressionPredictor
from stmix.tl._device import autocast
from stmix.tl._model import predict_batches

logger = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """What :func:`train` hands back."""

    history: list[dict]
    best_epoch: int
    seconds: float


def train(
    module: ExpressionPredictor,
    augmentation: Augmentation,
    train_patches: torch.Tensor,
    train_targets: torch.Tensor,
    val_patches: torch.Tensor,
    val_targets: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    min_lr: float,
    patience: int | None,
    device: torch.device,
    progress: bool,
    desc: str = "fit",
) -> TrainingResult:
    """Train ``module`` in place and leave it with the weights of the best validation epoch.

    Patches (uint8) and targets are moved to ``device`` once; each step indexes them, samples
    partners and mixes on the device and runs the backbone once on the stacked batch. The host
    synchronises once per epoch (for the loss record and the validation metrics).

    AdamW (betas 0.9/0.98, eps 1e-6) with cosine annealing from ``lr`` to ``min_lr`` over all
    steps, as in the paper. Early stopping: after ``patience`` epochs without a lower validation
    MSE; without validation spots, the last epoch is kept.
    """
    started = time.perf_counter()
    module.to(device)
    if device.type == "cuda":
        module.to(memory_format=torch.channels_last)
    augmentation = augmentation.to(device)
    train_patches, train_targets = train_patches.to(device), train_targets.to(device)
    val_patches, val_targets = val_patches.to(device), val_targets.to(device)
    n = len(train_patches)
    steps = math.ceil(n / batch_size)
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(epochs * steps, 1), eta_min=min_lr
    )

    history: list[dict] = []
    best_mse, best_epoch, best_state, waited = math.inf, 0, None, 0
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        epoch_start = time.perf_counter()
        module.train()
        sums: dict[str, torch.Tensor] = {}
        order = torch.randperm(n, device=device)
        for start in range(0, n, batch_size):
            losses = training_step(
                module,
                augmentation,
                optimizer,
                scheduler,
                order[start : start + batch_size],
                train_patches,
                train_targets,
                device,
            )
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value
        terms = {key: float(value) / steps for key, value in sums.items()}  # one sync per epoch
        _check_finite(terms, epoch)

        row = {"epoch": epoch, **{f"train_{k}": v for k, v in terms.items()}}
        if len(val_patches):
            pred = predict_batches(module, val_patches, device=device)
            row.update({f"val_{k}": v for k, v in summary(gene_metrics(val_targets, pred)).items()})
        row["lr"] = optimizer.param_groups[0]["lr"]
        row["seconds"] = time.perf_counter() - epoch_start
        history.append(row)

        score = row.get("val_mse", -epoch)  # without validation: the latest epoch is best
        if score < best_mse:
            best_mse, best_epoch, waited = score, epoch, 0
            best_state = copy.deepcopy(
                {k: v.detach().cpu() for k, v in module.state_dict().items()}
            )
        else:
            waited += 1
        bar.set_postfix(
            loss=f"{terms['total']:.4f}",
            val_mse=f"{row.get('val_mse', math.nan):.4f}",
            best=best_epoch,
        )
        if patience is not None and waited >= patience:
            logger.info(
                "Early stop at epoch %d: no better validation MSE for %d epochs; best epoch %d.",
                epoch,
                patience,
                best_epoch,
            )
            break
    bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return TrainingResult(history, best_epoch, time.perf_counter() - started)


def training_step(
    module: ExpressionPredictor,
    augmentation: Augmentation,
    optimizer: torch.optim.Optimizer,
    scheduler,
    anchors: torch.Tensor,
    patches: torch.Tensor,
    targets: torch.Tensor,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """One optimisation step on a batch of anchors; the loss terms stay on the device.

    Partners are drawn, images converted and mixed on the device, the backbone runs once on the
    stacked batch (bf16 autocast on CUDA), and nothing waits for the host.
    """
    step = augmentation(anchors, patches, targets)
    with autocast(device):
        pred = module(step.inputs)
    losses = step.loss(pred)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    optimizer.step()
    scheduler.step()
    return {key: value.detach() for key, value in losses.items()}


def _check_finite(terms: dict[str, float], epoch: int) -> None:
    # name the first broken component, not the total it spoils
    for key in sorted(terms, key=lambda k: k == "total"):
        value = terms[key]
        if not np.isfinite(value):
            raise FloatingPointError(
                f"Training stopped at epoch {epoch}: the {key!r} loss term is {value}. Lower "
                f"`lr`, check the expression for extreme values, or lower `loss_weights`."
            )
