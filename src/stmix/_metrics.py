"""Evaluation metrics: per-gene MSE, MAE and Pearson correlation (NumPy, float64).

One implementation serves every caller: :func:`stmix.tl.evaluate`, the validation of every
training epoch, :func:`stmix.tl.compare`, the figures of ``pl`` and the benchmarks.
"""

from __future__ import annotations

import numpy as np

#: The field's "highly expressed genes" score: mean PCC over the 50 genes with the highest
#: measured mean (as published HER2ST benchmarks report it).
HEG = 50


def gene_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-gene ``mse``, ``mae`` and ``pcc`` of predictions against truth, both (spots, genes).

    The Pearson correlation of a gene is NaN where the truth or the prediction is constant over
    the spots (the correlation is undefined there).
    """
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(
            f"truth and prediction must be equal (spots, genes) arrays, not "
            f"{t.shape} and {p.shape}."
        )
    error = p - t
    tc, pc = t - t.mean(axis=0), p - p.mean(axis=0)
    t_norm, p_norm = np.sqrt((tc**2).sum(axis=0)), np.sqrt((pc**2).sum(axis=0))
    defined = (t.std(axis=0) > 0) & (p.std(axis=0) > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pcc = np.where(defined, (tc * pc).sum(axis=0) / (t_norm * p_norm), np.nan)
    return {"mse": (error**2).mean(axis=0), "mae": np.abs(error).mean(axis=0), "pcc": pcc}


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
