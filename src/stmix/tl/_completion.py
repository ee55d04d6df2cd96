"""Training the neighbourhood transformer on one section (self-supervised) and filling gaps."""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from tqdm.auto import tqdm

from stmix.nn.completion import NeighbourhoodTransformer
from stmix.tl._device import resolve_device

logger = logging.getLogger(__name__)

#: Share of the observed entries held out to choose the epoch (never a training target).
VALIDATION_SHARE = 0.1


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
    device,
    progress: bool,
) -> tuple[np.ndarray, list[float]]:
    """The completed matrix and the validation MSE per epoch (epoch 0: the recalibrated median).

    Each step hides ``mask_prob`` of the observed entries of a batch of centre spots (filled
    with the adaptive median, flagged missing) and trains on the MSE at those entries. 10% of the
    observed entries are never targets: the epoch with the lowest MSE on them, hidden, is kept,
    so the result is never chosen on the entries it learnt from.
    """
    device = resolve_device(device)
    torch.manual_seed(seed)
    n, n_genes = x.shape
    observed = ~missing
    validation = _validation_entries(observed, seed)

    t = {
        name: torch.as_tensor(v, device=device)
        for name, v in {
            "x": x.astype(np.float32),
            "missing": missing,
            "median": median.astype(np.float32),
            "validation": validation,
        }.items()
    }
    index_t = torch.as_tensor(index, device=device, dtype=torch.long)
    ring_t = torch.as_tensor(ring, device=device, dtype=torch.long)

    model = NeighbourhoodTransformer(
        n_genes, n_rings, d_model=d_model, n_heads=n_heads, n_layers=n_layers
    ).to(device)
    trainable = observed & ~validation
    scale, shift = recalibration(x, median, trainable)
    with torch.no_grad():  # start from the median recalibrated gene by gene (least squares)
        model.gene_scale.copy_(torch.as_tensor(scale - 1.0))
        model.gene_shift.copy_(torch.as_tensor(shift))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(1, -(-n // batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps)

    def batch(centres: torch.Tensor, hidden: torch.Tensor, neighbour_hide: float = 0.0):
        """Inputs for ``centres`` with the entries ``hidden`` of each centre hidden.

        ``neighbour_hide`` also hides that share of the neighbours' observed entries (training
        only), so the model cannot recognise a spot by its neighbours and recall its values.
        """
        neighbours = index_t[centres]
        padding = torch.cat(
            [torch.zeros_like(neighbours[:, :1], dtype=torch.bool), neighbours < 0], dim=1
        )
        safe = neighbours.clamp(min=0)
        centre_values = torch.where(hidden, t["median"][centres], t["x"][centres])
        neighbour_flags = t["missing"][safe]
        if neighbour_hide:
            neighbour_flags = neighbour_flags | (
                torch.rand(neighbour_flags.shape, device=device) < neighbour_hide
            )
        # a neighbour's missing entries carry no value: their adaptive median would often be
        # the centre's own observed value, a shortcut that truly missing entries never offer
        neighbour_values = t["x"][safe].masked_fill(neighbour_flags, 0.0)
        values = torch.cat([centre_values[:, None], neighbour_values], dim=1)
        flags = torch.cat([hidden[:, None], neighbour_flags], dim=1)
        values = values.masked_fill(padding[..., None], 0.0)
        flags = flags & ~padding[..., None]
        rings = torch.cat([torch.zeros_like(centres)[:, None], ring_t[centres]], dim=1)
        return values, flags, rings, padding, t["median"][centres]

    @torch.inference_mode()
    def predict(hidden_all: torch.Tensor) -> torch.Tensor:
        model.eval()
        out = []
        for start in range(0, n, 256):
            centres = torch.arange(start, min(start + 256, n), device=device)
            out.append(model(*batch(centres, hidden_all[centres])))
        model.train()
        return torch.cat(out)

    def validation_mse() -> float:
        pred = predict(t["missing"] | t["validation"])
        err = (pred - t["x"])[t["validation"]]
        return float(err.square().mean()) if err.numel() else float("nan")

    history = [validation_mse()]  # epoch 0: the recalibrated adaptive median
    best, best_state = history[0], copy.deepcopy(model.state_dict())
    trainable_t = torch.as_tensor(trainable, device=device)
    bar = tqdm(range(1, epochs + 1), desc="complete", unit="epoch", disable=not progress)
    for _ in bar:
        order = torch.randperm(n, device=device)
        for start in range(0, n, batch_size):
            centres = order[start : start + batch_size]
            hide = torch.rand(len(centres), n_genes, device=device) < mask_prob
            hide &= trainable_t[centres]
            if not hide.any():
                continue
            pred = model(*batch(centres, hide | t["missing"][centres], mask_prob))
            loss = (pred - t["x"][centres])[hide].square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        history.append(validation_mse())
        if history[-1] < best:
            best, best_state = history[-1], copy.deepcopy(model.state_dict())
        bar.set_postfix(val_mse=f"{history[-1]:.4f}", median=f"{history[0]:.4f}")
    bar.close()
    model.load_state_dict(best_state)
    logger.info(
        "Completion: validation MSE %.4f (recalibrated median %.4f), best of %d epochs.",
        best,
        history[0],
        epochs,
    )
    pred = predict(t["missing"]).cpu().numpy()
    return np.where(missing, pred, x).astype(np.float32), history


def _validation_entries(observed: np.ndarray, seed: int) -> np.ndarray:
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
