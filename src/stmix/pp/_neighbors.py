"""Partner candidates and sampling weights of SNR-ST-Mix."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

from stmix import _anndata, _distance, _owner, _validate
from stmix._docs import doc_params
from stmix._keys import (
    NEIGHBORS,
    SPATIAL,
    SPLIT,
    connectivities_key,
    neighbors_uns_key,
    weights_key,
)
from stmix.pp import _kernel

logger = logging.getLogger(__name__)

#: Distances held at once by the exact expression-space search (float64: 256 MB).
KNN_BLOCK_ELEMENTS = 2**25
WRITER = "stmix.pp.neighbors"


@doc_params
def neighbors(
    adata: ad.AnnData,
    n_neighbors: int = 10,
    *,
    basis: str = "spatial",
    kernel: str = "gaussian",
    sigma: float | None = None,
    layer: str | None = None,
    spatial_key: str = SPATIAL,
    split_key: str = SPLIT,
    library_key: str | None = None,
    key_added: str = NEIGHBORS,
    seed: int = 0,
    copy: bool = False,
) -> ad.AnnData | None:
    r"""Partner candidates of every training spot and the probability of drawing each.

    SNR-ST-Mix mixes a training spot :math:`i` only with one of its candidates
    :math:`N(i)`, drawn with probability

    .. math::

        P(j \mid i) = \frac{K(i, j)}{\sum_{l \in N(i)} K(i, l)}, \quad j \in N(i)
        \qquad \text{(eq. 6)}

    where the kernel :math:`K` is on the distance between the expression vectors
    :math:`y_i, y_j` of the two spots:

    - ``kernel="gaussian"`` (the paper, eq. 5):
      :math:`K(i, j) = \exp(-\lVert y_i - y_j \rVert^2 / 2\sigma^2)`;
    - ``kernel="reference"`` (the public code, which passes the distance, not its square):
      :math:`K(i, j) = \exp(-\lVert y_i - y_j \rVert / 2\sigma^2)`.

    Only training spots are candidates, and a spot is never its own candidate.

    Parameters
    ----------
    adata
        Spots with a split (:func:`stmix.pp.split`) and log-normalised expression.
    n_neighbors
        Number of candidates per training spot (the paper's ``k``).
    basis
        Where candidates are nearest: ``"spatial"``, in ``obsm[spatial_key]`` (the paper,
        eq. 1; exact KD-tree); ``"expression"``, in expression space (what the public code's
        main experiment does; exact, in blocks of bounded memory: about 5 s for 10,000 training
        spots of 250 genes on 2 cores, 10 s for 20,000); or the key of
        a precomputed graph in ``obsp`` such as squidpy's ``"spatial_connectivities"``
        (:func:`squidpy.gr.spatial_neighbors`), whose training neighbours are the candidates
        (``n_neighbors`` is then ignored).
    kernel
        ``"gaussian"`` or ``"reference"``, see above.
    sigma
        Kernel bandwidth. Default: half the median pairwise expression distance among training
        spots (over all pairs up to 1,000 spots, else over 200,000 random pairs).
    layer
        Layer holding the expression; ``None`` uses ``X``.
    spatial_key
        {spatial_key}
    split_key
        Column of ``obs`` with the ``train`` / ``val`` / ``test`` labels.
    library_key
        Column of ``obs`` naming each spot's section (squidpy's ``library_key``; default
        ``"library_id"`` when ``uns["spatial"]`` holds several libraries and that column exists).
        Candidates and the bandwidth are then found within each section: a spot is never mixed
        with a spot of another section.
    key_added
        Prefix of the keys written.
    seed
        Seed for the sampled median.
    copy
        {copy}

    Returns
    -------
    anndata.AnnData or None
        ``None``, or a new AnnData when ``copy=True``; either way it holds

        - ``obsp[f"{key_added}_connectivities"]``: CSR, 1 where j is a candidate of i;
        - ``obsp[f"{key_added}_weights"]``: CSR float32, :math:`P(j \mid i)`; each training row sums
          to 1, other rows are empty;
        - ``uns[f"{key_added}_neighbors"]["params"]``: the parameters, the ``sigma`` used (with
          several sections, their median, and each section's under ``sigma_by_library``), the
          number of training spots and the neighbour ``method``.
    """
    n_neighbors = _validate.integer("n_neighbors", n_neighbors)
    _validate.choice("kernel", kernel, _kernel.KERNELS)
    seed = _validate.integer("seed", seed, minimum=0)
    if basis not in ("spatial", "expression") and basis not in adata.obsp:
        raise ValueError(
            f"`basis` must be 'spatial', 'expression' or a key of adata.obsp "
            f"({list(adata.obsp)}), not {basis!r}."
        )
    sigma = _validate.number("sigma", sigma, above=0, none=True)
    record = neighbors_uns_key(key_added)
    _owner.check_name(key_added)
    _owner.claim(
        adata,
        WRITER,
        record,
        [
            ("obsp", connectivities_key(key_added)),
            ("obsp", weights_key(key_added)),
            ("uns", record),
        ],
    )

    train = _anndata.labelled(adata, split_key, "train")
    graph = basis not in ("spatial", "expression")
    key = _anndata.library_key(adata, library_key)
    sections = _training_sections(adata, train, key, n_neighbors, graph)
    y_all = _anndata.expression(adata, layer, obs=train, dtype=np.float64)
    _anndata.warn_if_counts(y_all, layer)
    coords = _anndata.spatial_coordinates(adata, spatial_key) if basis == "spatial" else None
    estimated = sigma is None

    edges_from, edges_to, edge_weights, sigmas, methods, degrees = [], [], [], {}, set(), []
    for name, spots in sections.items():
        y = y_all[np.searchsorted(train, spots)]  # train is sorted; spots are some of it
        sigmas[name] = _kernel.bandwidth(y, seed=seed) if estimated else float(sigma)
        where = "" if key is None else f" of section {name!r}"
        indptr, indices, how = _candidates(adata, basis, spots, y, coords, n_neighbors, where)
        methods.add(how)
        counts = np.diff(indptr)
        rows = np.repeat(np.arange(len(spots)), counts)
        distance = _distance.pairs(y, rows, indices)
        weights = _row_softmax(_kernel.log_kernel(distance, sigmas[name], kernel), rows, len(spots))
        edges_from.append(spots[rows])  # back to positions in adata
        edges_to.append(spots[indices])
        edge_weights.append(weights)
        degrees.append(counts)

    n = adata.n_obs
    where = (np.concatenate(edges_from), np.concatenate(edges_to))
    weights = np.concatenate(edge_weights)
    counts = np.concatenate(degrees)
    conn = sparse.csr_matrix((np.ones(len(weights), np.float32), where), shape=(n, n))
    wmat = sparse.csr_matrix((weights.astype(np.float32), where), shape=(n, n))
    method = "+".join(sorted(methods))
    sigma = float(np.median(list(sigmas.values())))

    params = {
        "n_neighbors": int(n_neighbors) if not graph else int(counts.max(initial=0)),
        "basis": basis,
        "kernel": kernel,
        "sigma": float(sigma),
        "sigma_estimated": bool(estimated),
        "spatial_key": spatial_key,
        "split_key": split_key,
        "n_train": len(train),
        "method": method,
        "seed": int(seed),
    }
    if layer is not None:
        params["layer"] = layer
    if key is not None:
        params["library_key"] = key
        params["sigma_by_library"] = {name: float(value) for name, value in sigmas.items()}

    adata = adata.copy() if copy else adata
    adata.obsp[connectivities_key(key_added)] = conn
    adata.obsp[weights_key(key_added)] = wmat
    adata.uns[neighbors_uns_key(key_added)] = _owner.mark({"params": params}, WRITER)
    return adata if copy else None


def _training_sections(adata, train, key, n_neighbors: int, graph: bool) -> dict:
    """Each section's training spots (positions in ``adata``), checked to have enough."""
    labels = (
        np.zeros(adata.n_obs, dtype=int) if key is None else adata.obs[key].astype(str).to_numpy()
    )
    sections = {name: train[labels[train] == name] for name in dict.fromkeys(labels[train])}
    for name, spots in sections.items():
        where = "" if key is None else f" of section {name!r}"
        if not graph and len(spots) < n_neighbors + 1:
            raise ValueError(
                f"{len(spots)} training spots{where} cannot give each of them {n_neighbors} "
                f"candidates other than itself: lower `n_neighbors` to at most "
                f"{max(len(spots) - 1, 0)} or train on more spots (stmix.pp.split)."
            )
        if graph and len(spots) < 2:
            raise ValueError(f"Mixing needs at least two training spots{where}.")
    return sections


def _candidates(adata, basis: str, spots, y, coords, n_neighbors: int, where: str):
    """One section's candidates as CSR rows over ``spots`` and how they were found."""
    if basis == "spatial":
        _anndata.check_distinct(coords[spots], adata.obs_names[spots])
        return (*_to_csr(_knn(coords[spots], n_neighbors)), "kdtree")
    if basis == "expression":
        knn, how = _expression_knn(y, n_neighbors)
        return (*_to_csr(knn), how)
    indptr, indices = _graph_candidates(adata.obsp[basis], spots)
    isolated = int(np.sum(np.diff(indptr) == 0))
    if isolated:
        logger.warning(
            "%d of %d training spots%s have no training neighbour in obsp[%r]; they "
            "are not mixed (paired with themselves).",
            isolated,
            len(spots),
            where,
            basis,
        )
    return indptr, indices, f"obsp[{basis!r}]"


def _knn(points: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest other rows of each row (exact KD-tree), as an (n, k) index array."""
    _, index = cKDTree(points).query(points, k=k + 1, workers=-1)  # exact; every core
    return _drop_self(index, k)


def _drop_self(index: np.ndarray, k: int) -> np.ndarray:
    """Remove each row's own index (or, when ties hid it, its last column)."""
    n = len(index)
    is_self = index == np.arange(n)[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    return index[~is_self].reshape(n, k)


def _expression_knn(y: np.ndarray, k: int) -> tuple[np.ndarray, str]:
    """Exact ``k`` nearest other rows in expression space, block by block (``len(y) > k``).

    Exact rather than approximate (pynndescent): deterministic, and without the half-minute
    of numba compilation an approximate index costs on first use, which is longer than the exact
    search for any section-sized set of training spots. Each row's neighbours come in no
    particular order: they become a set of candidates in ``.obsp``.
    """
    chunk = max(1, KNN_BLOCK_ELEMENTS // len(y))
    found = []
    for start, d in _distance.blocks(y, chunk=chunk):
        d[np.arange(len(d)), np.arange(start, start + len(d))] = np.inf  # not itself
        found.append(np.argpartition(d, k - 1, axis=1)[:, :k])
    return np.concatenate(found), "exact"


def _to_csr(knn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, k = knn.shape
    return np.arange(0, n * k + 1, k, dtype=np.int64), knn.reshape(-1).astype(np.int64)


def _graph_candidates(graph, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sub = sparse.csr_matrix(graph)[train][:, train].tolil()
    sub.setdiag(0)
    sub = sub.tocsr()
    sub.eliminate_zeros()
    sub.sort_indices()
    return sub.indptr.astype(np.int64), sub.indices.astype(np.int64)


def _row_softmax(log_k: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
    """Softmax of ``log_k`` among the entries of each row (stable when every value underflows)."""
    top = np.full(n_rows, -np.inf)
    np.maximum.at(top, rows, log_k)
    w = np.exp(log_k - top[rows])
    total = np.bincount(rows, weights=w, minlength=n_rows)
    return w / total[rows]
