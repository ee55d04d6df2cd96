"""Building each ``augment=`` method's :class:`~stmix.nn.Augmentation` from an AnnData.

With several sections, ``groups`` gives each training spot's section: every method then draws
partners within the anchor's section only, and the expression kernel of ``cmixup`` and of the
reference edge weights uses each section's own bandwidth.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import torch
from scipy import sparse

from stmix import _distance, _options
from stmix._keys import neighbors_uns_key, weights_key
from stmix.errors import MissingKeyError
from stmix.nn.augment import METHODS, Augmentation, Mix, Plain
from stmix.nn.sampling import CandidateSampler, DenseSampler, UniformSampler
from stmix.pp import _kernel

#: Largest training set for the methods that hold an n × n matrix (cmixup, reference edges).
DENSE_LIMIT = 20_000


def check_neighbors(
    adata: ad.AnnData,
    method: str,
    train: np.ndarray,
    key: str,
    groups: np.ndarray | None = None,
) -> None:
    """Raise a clear error when ``method`` needs ``pp.neighbors`` output that is missing/stale.

    ``groups`` (one label per training spot): a graph that links two sections is refused.
    """
    if method not in ("snr", "knn"):
        return
    wkey = weights_key(key)
    if wkey not in adata.obsp:
        raise MissingKeyError(
            f"{_options.arg('augment', method)} draws partners from adata.obsp[{wkey!r}], which "
            f"is missing: run stmix.pp.neighbors(adata) after stmix.pp.split (or pass "
            f"`neighbors_key=`)."
        )
    weights = sparse.csr_matrix(adata.obsp[wkey])
    others = np.setdiff1d(np.arange(adata.n_obs), train)
    if weights[others].nnz or weights[train][:, others].nnz:
        raise ValueError(
            f"adata.obsp[{wkey!r}] links spots outside the current training split: the split "
            f"changed after stmix.pp.neighbors. Run stmix.pp.neighbors(adata) again."
        )
    if groups is not None:
        sub = weights[train][:, train].tocoo()
        crossing = int(np.sum(groups[sub.row] != groups[sub.col]))
        if crossing:
            raise ValueError(
                f"adata.obsp[{wkey!r}] pairs {crossing} spots with spots of another section. "
                f"Run stmix.pp.neighbors(adata, library_key=...) so that partners stay within "
                f"their section."
            )
    _check_same_spots(adata, weights[train][:, train], len(train), key)


def _check_same_spots(adata: ad.AnnData, weights: sparse.csr_matrix, n_train: int, key) -> None:
    """The graph was built on these training spots: its count agrees and its rows sum to 1."""
    record = adata.uns.get(neighbors_uns_key(key))
    params = (record.get("params") or {}) if isinstance(record, dict) else {}
    built_on = params.get("n_train")
    sums = np.asarray(weights.sum(axis=1)).ravel()
    broken = int(np.sum((np.diff(weights.indptr) > 0) & (np.abs(sums - 1) > 1e-3)))
    if (built_on is not None and int(built_on) != n_train) or broken:
        found = f"built on {built_on} training spots" if built_on is not None else "built"
        raise ValueError(
            f"adata.obsp[{weights_key(key)!r}] was {found}, but this AnnData has {n_train} "
            f"and {broken} of their weight rows no longer sum to 1: the spots changed after "
            f"stmix.pp.neighbors (a subset such as adata[mask].copy()?). Run "
            f"stmix.pp.neighbors(adata) on this AnnData again."
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
    groups: np.ndarray | None = None,
    stain: float = 0.0,
) -> Augmentation:
    """The augmentation of ``method`` over the training spots ``train`` (positions in adata).

    Edge weights of the loss (``edge_weight``): ``"paper"``, the probability with which the
    method drew the partner (eq. 6 for ``snr``); ``"reference"``, the expression kernel
    normalised over all training spots of the section, as the public code computes it, for
    every method.
    """
    if method == "none":
        return Plain(stain=stain)
    if method == "basic":
        return Plain(geometric=True, stain=stain)
    if method not in METHODS:
        raise ValueError(
            f"{_options.name('augment')} must be one of {list(METHODS)}, not {method!r}."
        )
    n = len(train)
    if n < 2:
        raise ValueError(
            f"{_options.arg('augment', method)} mixes training spots, but there is only {n}."
        )
    labels = np.zeros(n, dtype=int) if groups is None else np.asarray(groups)
    blocks = [np.flatnonzero(labels == g) for g in dict.fromkeys(labels)]
    names = list(dict.fromkeys(labels))
    kernel, sigmas = _kernel_params(adata, y_train, neighbors_key, blocks, names)
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
            edge = _reference_edges(y_train, rows, sub.indices, blocks, sigmas, kernel)
        sampler = CandidateSampler.from_csr(sub.indptr, sub.indices, weights, edge=edge)
    elif method == "cmixup":
        sampler = DenseSampler(torch.from_numpy(_block_kernel(y_train, blocks, sigmas, kernel)))
    elif reference_edges:  # mixup / cutmix, uniform partner, reference edge weights
        uniform = np.zeros((n, n))
        for block in blocks:
            if len(block) > 1:
                uniform[np.ix_(block, block)] = 1.0 / (len(block) - 1)
        np.fill_diagonal(uniform, 0.0)
        alone = uniform.sum(axis=1) == 0
        uniform[alone, alone] = 1.0  # a spot alone in its section mixes with itself
        edge = _block_kernel(y_train, blocks, sigmas, kernel)
        sampler = DenseSampler(torch.from_numpy(uniform), edge=torch.from_numpy(edge))
    else:
        group_ids = torch.from_numpy(np.unique(labels, return_inverse=True)[1].astype(np.int64))
        sampler = UniformSampler(n, None if groups is None else group_ids)
    return Mix(
        sampler, alpha=alpha, boxes=method == "cutmix", loss_weights=loss_weights, stain=stain
    )


def _kernel_params(adata, y_train, key, blocks, names) -> tuple[str, list[float]]:
    """Kernel and each section's bandwidth recorded by ``pp.neighbors``, else the defaults."""
    params = (adata.uns.get(neighbors_uns_key(key)) or {}).get("params") or {}
    kernel = str(params.get("kernel", "gaussian"))
    by_library = params.get("sigma_by_library") or {}
    sigmas = []
    for name, block in zip(names, blocks, strict=True):
        if str(name) in by_library:
            sigmas.append(float(by_library[str(name)]))
        elif "sigma" in params and len(blocks) == 1:
            sigmas.append(float(params["sigma"]))
        elif len(block) > 1:
            sigmas.append(_kernel.bandwidth(y_train[block].astype(np.float64)))
        else:
            sigmas.append(1.0)  # a lone spot has no partner: its bandwidth is never used
    return kernel, sigmas


def _check_dense(n: int, method: str) -> None:
    if n > DENSE_LIMIT:
        raise ValueError(
            f"{_options.arg('augment', method)} with these edge weights holds an n × n matrix "
            f"over the {n:,} training spots (limit {DENSE_LIMIT:,}); use "
            f"{_options.arg('augment', 'snr')} or 'knn', which scale linearly, or "
            f"edge_weight='paper'."
        )


def _block_kernel(y, blocks, sigmas, kernel) -> np.ndarray:
    """C-Mixup's P(j | i) within each section (zero across sections)."""
    out = np.zeros((len(y), len(y)))
    for block, sigma in zip(blocks, sigmas, strict=True):
        if len(block) == 1:
            out[block[0], block[0]] = 1.0  # alone: mixed with itself
            continue
        out[np.ix_(block, block)] = _kernel.dense(y[block], sigma, kernel)
    return out


def _reference_edges(y, rows, cols, blocks, sigmas, kernel) -> np.ndarray:
    """``K(i, j) / Σ_{l ≠ i} K(i, l)`` over i's section, for the given pairs (the public code's)."""
    totals = np.empty(len(y))
    sigma_of = np.empty(len(y))
    for block, sigma in zip(blocks, sigmas, strict=True):
        totals[block] = _kernel.row_totals(y[block], sigma, kernel)
        sigma_of[block] = sigma
    distance = _distance.pairs(y, rows, cols)
    k = np.exp(_kernel.log_kernel(distance, sigma_of[rows], kernel))
    return np.divide(k, totals[rows], out=np.zeros_like(k), where=totals[rows] > 0)
