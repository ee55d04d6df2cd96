"""Evaluation metrics: per-gene MSE, MAE and Pearson correlation."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def gene_metrics(truth: Tensor | np.ndarray, pred: Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """Per-gene ``mse``, ``mae`` and ``pcc`` of predictions against truth, both (spots, genes).

    The Pearson correlation of a gene is NaN where the truth or the prediction is constant over
    the spots (the correlation is undefined there). Computed in float64.
    """
    t = torch.as_tensor(truth).detach().to(torch.float64)
    p = torch.as_tensor(pred).detach().to(device=t.device, dtype=torch.float64)
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(
            f"truth and prediction must be equal (spots, genes) arrays, not "
            f"{tuple(t.shape)} and {tuple(p.shape)}."
        )
    error = p - t
    tc, pc = t - t.mean(dim=0), p - p.mean(dim=0)
    t_norm, p_norm = tc.square().sum(dim=0).sqrt(), pc.square().sum(dim=0).sqrt()
    defined = (t.std(dim=0, unbiased=False) > 0) & (p.std(dim=0, unbiased=False) > 0)
    pcc = torch.where(defined, (tc * pc).sum(dim=0) / (t_norm * p_norm), torch.nan)
    return {
        "mse": error.square().mean(dim=0).cpu().numpy(),
        "mae": error.abs().mean(dim=0).cpu().numpy(),
        "pcc": pcc.cpu().numpy(),
    }


def summary(metrics: dict[str, np.ndarray]) -> dict[str, float]:
    """Overall ``mse``, ``mae`` (means over genes, i.e. over all entries) and ``pcc``.

    ``pcc`` is the mean per-gene correlation over the genes where it is defined: the metric of
    the paper and of the public reference code.
    """
    pcc = metrics["pcc"]
    return {
        "mse": float(np.mean(metrics["mse"])),
        "mae": float(np.mean(metrics["mae"])),
        "pcc": float(np.nanmean(pcc)) if np.isfinite(pcc).any() else float("nan"),
    }
