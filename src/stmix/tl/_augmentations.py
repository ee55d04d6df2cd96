"""Building each ``augment=`` method's :class:`~stmix.nn.Augmentation` from an AnnData."""

from __future__ import annotations

import anndata as ad
import numpy as np
import torch
from scipy import sparse

from stmix import _distance
from stmix._keys import neighbors_uns_key, weights_key
from stmix.nn.augment import METHODS, Augmentation, Mix, Plain
from stmix.nn.sampling import CandidateSampler, DenseSampler, UniformSampler
from stmix.pp import _kernel

#: Largest training set for the methods that hold an n × n matrix (cmixup, reference edges).
DENSE_LIMIT = 20_000


def check_neighbors(adata: ad.AnnData, method: str, train: np.ndarray, key: str) -> None:
    """Raise a clear error when ``method`` needs ``pp.neighbors`` output that is missing/stale."""
    if method not in ("snr", "knn"):
        return
    wkey = weights_key(key)
    if wkey not in adata.obsp:
        raise KeyError(
            f"augment={method!r} draws partners from adata.obsp[{wkey!r}], which is missing: "
            f"run stmix.pp.neighbors(adata) after stmix.pp.split (or pass `neighbors_key=`)."
        )
    weights = sparse.csr_matrix(adata.obsp[wkey])
    others = np.setdiff1d(np.arange(adata.n_obs), train)
    if weights[others].nnz or weights[train][:, others].nnz:
        raise ValueError(
            f"adata.obsp[{wkey!r}] links spots outside the current training split: the split "
            f"changed after stmix.pp.neighbors. Run stmix.pp.neighbors(adata) again."
        )


def build(
    adata: ad.AnnData,
    method: str,
    train: np.ndarray,
    y_train: np.ndarray,
    *,
    alpha: float,
    loss_weights: dict[str, float] | None,
    edge_weight: str,
    neighbors_key: str,
) -> Augmentation:
    """The augmentation of ``method`` over the training spots ``train`` (positions in adata).

    Edge weights of the loss (``edge_weight``): ``"paper"``, the probability with which the
    method drew the partner (eq. 6 for ``snr``); ``"reference"``, the expression kernel
    normalised over all training spots, as the public code computes it, for every method.
    """
    if method == "none":
        return Plain()
    if method == "basic":
        return Plain(geometric=True)
    if method not in METHODS:
        raise ValueError(f"`augment` must be one of {list(METHODS)}, not {method!r}.")
    n = len(train)
    if n < 2:
        raise ValueError(f"augment={method!r} mixes training spots, but there is only {n}.")
    kernel, sigma = _kernel_params(adata, y_train, neighbors_key)
    reference_edges = edge_weight == "reference"
    if method in ("cmixup",) or (reference_edges and method in ("mixup", "cutmix")):
        _check_dense(n, method)

    if method in ("snr", "knn"):
        sub = sparse.csr_matrix(adata.obsp[weights_key(neighbors_key)])[train][:, train]
        sub.sort_indices()
        weights = sub.data if method == "snr" else None
        edge = None
        if reference_edges:
            rows = np.repeat(np.arange(n), np.diff(sub.indptr))
            edge = _reference_edges(y_train, rows, sub.indices, sigma, kernel)
        sampler = CandidateSampler.from_csr(sub.indptr, sub.indices, weights, edge=edge)
    elif method == "cmixup":
        probs = _kernel.dense(y_train, sigma, kernel)
        sampler = DenseSampler(torch.from_numpy(probs))
    elif reference_edges:  # mixup / cutmix, uniform partner, reference edge weights
        uniform = np.full((n, n), 1.0 / (n - 1))
        np.fill_diagonal(uniform, 0.0)
        edge = _kernel.dense(y_train, sigma, kernel)
        sampler = DenseSampler(torch.from_numpy(uniform), edge=torch.from_numpy(edge))
    else:
        sampler = UniformSampler(n)
    return Mix(sampler, alpha=alpha, boxes=method == "cutmix", loss_weights=loss_weights)


def _kernel_params(adata: ad.AnnData, y_train: np.ndarray, key: str) -> tuple[str, float]:
    """Kernel and bandwidth recorded by ``pp.neighbors``, else the Gaussian default."""
    params = (adata.uns.get(neighbors_uns_key(key)) or {}).get("params") or {}
    if "sigma" in params and "kernel" in params:
        return str(params["kernel"]), float(params["sigma"])
    return "gaussian", _kernel.bandwidth(y_train.astype(np.float64))


def _check_dense(n: int, method: str) -> None:
    if n > DENSE_LIMIT:
        raise ValueError(
            f"augment={method!r} with these edge weights holds an n × n matrix over the "
            f"{n:,} training spots (limit {DENSE_LIMIT:,}); use augment='snr' or 'knn', which "
            f"scale linearly, or edge_weight='paper'."
        )


def _reference_edges(y, rows, cols, sigma, kernel) -> np.ndarray:
    """``K(i, j) / Σ_{l ≠ i} K(i, l)`` for the given pairs (the public code's edge weight)."""
    totals = _kernel.row_totals(y, sigma, kernel)
    distance = _distance.pairs(y, rows, cols)
    k = np.exp(_kernel.log_kernel(distance, sigma, kernel))
    return np.divide(k, totals[rows], out=np.zeros_like(k), where=totals[rows] > 0)
