from __future__ import annotations

import logging
import re

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from scipy import sparse
from scipy.spatial.distance import cdist

import stmix
from stmix import _distance
from stmix.pp import _neighbors
from tests.support import assert_unchanged, defaults, snapshot


@pytest.fixture
def c3_reference_adata(reference):
    """The reference's preprocessed C3 expression (250 genes) with the reference's split."""
    adata = ad.AnnData(reference["expression"].copy())
    adata.obs_names = reference["obs_names"]
    adata.var_names = reference["gene_names"]
    stmix.pp.split(adata, 0.3, 0.2, seed=0)
    return adata


@pytest.fixture
def c2_log(her2st):
    adata = her2st("C2")
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    top = np.argsort(np.asarray(adata.X.mean(axis=0)).ravel())[-250:]
    adata = adata[:, np.sort(top)].copy()
    stmix.pp.split(adata)
    return adata


def test_weights_equal_the_reference_sampling_distribution(c3_reference_adata, reference):
    adata = c3_reference_adata
    train = reference["train"]
    stmix.pp.neighbors(
        adata, 9, basis="expression", kernel="reference", sigma=float(reference["sigma"])
    )
    weights = adata.obsp["stmix_weights"]
    for row, spot in enumerate(train):
        # the reference draws among its 10 nearest (itself first), self weight zeroed
        candidates = reference["neighbors"][row][1:]
        expected = reference["probabilities"][row, candidates]
        expected = expected / expected.sum()
        got = weights[spot].toarray().ravel()
        np.testing.assert_allclose(got[train[candidates]], expected, atol=1e-5)
        assert weights[spot].nnz == 9
        assert got.sum() == pytest.approx(1.0, abs=1e-6)


def test_default_sigma_is_the_reference_bandwidth(c3_reference_adata, reference):
    stmix.pp.neighbors(c3_reference_adata, 9, basis="expression", kernel="reference")
    params = c3_reference_adata.uns["stmix_neighbors"]["params"]
    assert params["sigma_estimated"]
    assert params["sigma"] == pytest.approx(float(reference["sigma"]), rel=0.02)


def test_spatial_candidates_are_the_nearest_training_spots(c2_log):
    adata = c2_log
    stmix.pp.neighbors(adata, 6)
    train = np.flatnonzero(adata.obs["stmix_split"] == "train")
    conn, weights = adata.obsp["stmix_connectivities"], adata.obsp["stmix_weights"]
    assert sparse.isspmatrix_csr(conn) and weights.dtype == np.float32
    # non-training rows are empty, columns are training spots only
    not_train = np.setdiff1d(np.arange(adata.n_obs), train)
    assert conn[not_train].nnz == 0 and weights[not_train].nnz == 0
    assert np.isin(conn.indices, train).all()
    np.testing.assert_allclose(np.asarray(weights[train].sum(axis=1)).ravel(), 1.0, atol=1e-6)

    coords = adata.obsm["spatial"][train]
    pixel = cdist(coords, coords)
    np.fill_diagonal(pixel, np.inf)
    y = adata.X[train].toarray()
    expression = cdist(y, y)
    sigma = adata.uns["stmix_neighbors"]["params"]["sigma"]
    for row, spot in enumerate(train):
        got = conn[spot].indices
        assert spot not in got
        expected = train[np.argsort(pixel[row])[:6]]
        assert set(got) == set(expected)
        # eq. 5-6: the Gaussian kernel on expression distance, normalised over the candidates
        cols = np.searchsorted(train, got)
        kernel = np.exp(-(expression[row, cols] ** 2) / (2 * sigma**2))
        np.testing.assert_allclose(
            weights[spot, got].toarray().ravel(), kernel / kernel.sum(), rtol=1e-4
        )


def test_kernels_differ_and_are_recorded(c2_log):
    a = stmix.pp.neighbors(c2_log, 5, kernel="gaussian", copy=True)
    b = stmix.pp.neighbors(c2_log, 5, kernel="reference", copy=True)
    assert (a.obsp["stmix_connectivities"] != b.obsp["stmix_connectivities"]).nnz == 0
    assert abs(a.obsp["stmix_weights"] - b.obsp["stmix_weights"]).max() > 1e-3
    assert b.uns["stmix_neighbors"]["params"]["kernel"] == "reference"


def test_precomputed_squidpy_graph(c2_log, caplog):
    import squidpy as sq

    adata = c2_log
    sq.gr.spatial_neighbors_grid(adata, n_neighs=4, n_rings=2)
    with caplog.at_level(logging.WARNING, logger="stmix"):
        stmix.pp.neighbors(adata, basis="spatial_connectivities")
    graph = adata.obsp["spatial_connectivities"]
    conn, weights = adata.obsp["stmix_connectivities"], adata.obsp["stmix_weights"]
    train = np.flatnonzero(adata.obs["stmix_split"] == "train")
    for spot in train:
        got = set(conn[spot].indices)
        assert got == set(graph[spot].indices) & set(train) - {spot}
        if got:
            assert weights[spot].sum() == pytest.approx(1.0, abs=1e-6)
    isolated = sum(conn[s].nnz == 0 for s in train)
    assert isolated > 0 and re.search(rf"\b{isolated} of {len(train)} training spots", caplog.text)
    params = adata.uns["stmix_neighbors"]["params"]
    assert params["method"] == "obsp['spatial_connectivities']"
    assert params["n_neighbors"] == max(conn[s].nnz for s in train)  # the largest degree


@pytest.mark.parametrize("rows", [1, 7])
def test_expression_candidates_are_exact_in_small_blocks(c2_log, monkeypatch, rows):
    whole = stmix.pp.neighbors(c2_log, 5, basis="expression", copy=True)
    n_train = int((c2_log.obs["stmix_split"] == "train").sum())
    # a block of `rows` rows holds at most KNN_BLOCK_ELEMENTS distances
    monkeypatch.setattr(_neighbors, "KNN_BLOCK_ELEMENTS", rows * n_train + n_train - 1)
    blocks, original = [], _distance.blocks

    def recorded(y, *, chunk):
        for start, d in original(y, chunk=chunk):
            blocks.append(len(d))
            yield start, d

    monkeypatch.setattr(_distance, "blocks", recorded)
    blocked = stmix.pp.neighbors(c2_log, 5, basis="expression", copy=True)
    assert blocks[:-1] == [rows] * (len(blocks) - 1) and sum(blocks) == n_train
    assert blocked.uns["stmix_neighbors"]["params"]["method"] == "exact"
    a, b = whole.obsp["stmix_connectivities"], blocked.obsp["stmix_connectivities"]
    assert (a != b).nnz == 0
    train = np.flatnonzero(c2_log.obs["stmix_split"] == "train")
    y = np.asarray(c2_log.X[train].todense() if hasattr(c2_log.X, "todense") else c2_log.X[train])
    d = np.linalg.norm(y[:, None, :] - y[None, :, :], axis=2)
    np.fill_diagonal(d, np.inf)
    for row, spot in enumerate(train):
        expected = set(train[np.argsort(d[row], kind="stable")[:5]])
        assert set(a[spot].indices) == expected


def test_expression_candidates_can_be_every_other_training_spot(c2_log):
    n_train = int((c2_log.obs["stmix_split"] == "train").sum())
    stmix.pp.neighbors(c2_log, n_train - 1, basis="expression")
    conn = c2_log.obsp["stmix_connectivities"]
    train = np.flatnonzero(c2_log.obs["stmix_split"] == "train")
    for spot in train[:: max(1, n_train // 10)]:
        assert set(conn[spot].indices) == set(train) - {spot}


def test_one_expression_candidate_is_the_nearest(c2_log):
    stmix.pp.neighbors(c2_log, 1, basis="expression")
    train = np.flatnonzero(c2_log.obs["stmix_split"] == "train")
    y = c2_log.X[train].toarray().astype(np.float64)
    d = cdist(y, y)
    np.fill_diagonal(d, np.inf)
    conn = c2_log.obsp["stmix_connectivities"][train][:, train]
    np.testing.assert_array_equal(conn.indices, d.argmin(axis=1))


def test_write_h5ad_round_trip(c2_log, tmp_path):
    stmix.pp.neighbors(c2_log, 4)
    c2_log.write_h5ad(tmp_path / "n.h5ad")
    back = ad.read_h5ad(tmp_path / "n.h5ad")
    assert (back.obsp["stmix_weights"] != c2_log.obsp["stmix_weights"]).nnz == 0
    assert back.uns["stmix_neighbors"]["params"] == c2_log.uns["stmix_neighbors"]["params"]


def test_key_added(c2_log):
    stmix.pp.neighbors(c2_log, 3, key_added="mine")
    assert {"mine_connectivities", "mine_weights"} <= set(c2_log.obsp)
    assert "mine_neighbors" in c2_log.uns


def test_raw_counts_warn(her2st, caplog):
    adata = her2st("C2")[:, :300].copy()
    stmix.pp.split(adata)
    with caplog.at_level(logging.WARNING, logger="stmix"):
        stmix.pp.neighbors(adata, 3)
    assert "The expression in X looks like raw counts" in caplog.text
    adata.layers["counts"] = adata.X.copy()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stmix"):
        stmix.pp.neighbors(adata, 3, layer="counts")
    assert "The expression in layers['counts'] looks like raw counts" in caplog.text


def test_too_few_training_spots(c2_log):
    before = snapshot(c2_log)
    n_train = int((c2_log.obs["stmix_split"] == "train").sum())
    with pytest.raises(
        ValueError, match=rf"{n_train} training spots cannot .* at most {n_train - 1}"
    ):
        stmix.pp.neighbors(c2_log, n_train)
    assert_unchanged(c2_log, before)


def test_nan_expression(c2_log):
    c2_log.X = c2_log.X.toarray()
    train = np.flatnonzero(c2_log.obs["stmix_split"] == "train")
    c2_log.X[train[3], 7] = np.nan
    before = snapshot(c2_log)
    with pytest.raises(ValueError, match="NaN"):
        stmix.pp.neighbors(c2_log)
    assert_unchanged(c2_log, before)


def test_identical_expression(c2_log):
    c2_log.X = np.ones(c2_log.shape, dtype=np.float32)
    before = snapshot(c2_log)
    with pytest.raises(ValueError, match="identical"):
        stmix.pp.neighbors(c2_log)
    assert_unchanged(c2_log, before)


def test_no_split(c2_log):
    del c2_log.obs["stmix_split"]
    before = snapshot(c2_log)
    with pytest.raises(KeyError, match=r"stmix\.pp\.split"):
        stmix.pp.neighbors(c2_log)
    assert_unchanged(c2_log, before)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kernel": "laplace"}, ValueError, "`kernel`"),
        ({"basis": "umap"}, ValueError, "basis"),
        ({"sigma": 0.0}, ValueError, "`sigma`"),
        ({"n_neighbors": 0}, ValueError, "`n_neighbors`"),
        ({"n_neighbors": 2.5}, TypeError, "`n_neighbors`"),
        ({"seed": -1}, ValueError, "`seed`"),
        ({"layer": "nope"}, KeyError, "nope"),
        ({"spatial_key": "nope"}, KeyError, "nope"),
    ],
)
def test_bad_arguments(c2_log, kwargs, error, match):
    before = snapshot(c2_log)
    with pytest.raises(error, match=match):
        stmix.pp.neighbors(c2_log, **kwargs)
    assert_unchanged(c2_log, before)


def test_partners_never_cross_sections_on_real_data(her2st):
    """C2-C6 in one AnnData: concatenate, cut patches, split and find partners in under 10 s.

    The sections are loaded first (their stored images decoded); the timing covers what follows,
    including decoding each full-resolution slide for its patches.
    """
    import time

    import scanpy as sc

    sections = {s: her2st(s) for s in ("C2", "C3", "C4", "C5", "C6")}
    start = time.perf_counter()
    adata = stmix.pp.concat(sections)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    stmix.pp.patches(adata, size=32, progress=False)
    stmix.pp.split(adata)
    stmix.pp.neighbors(adata, 10)
    seconds = time.perf_counter() - start
    assert seconds < 10, seconds  # measured here: about 3.5 s

    section = adata.obs["library_id"].to_numpy()
    for key in ("stmix_connectivities", "stmix_weights"):
        graph = adata.obsp[key].tocoo()
        assert graph.nnz > 0
        assert (section[graph.row] == section[graph.col]).all(), key
    weights = adata.obsp["stmix_weights"]
    train = (adata.obs["stmix_split"] == "train").to_numpy()
    np.testing.assert_allclose(np.asarray(weights[train].sum(axis=1)).ravel(), 1.0, rtol=1e-5)
    # each section's bandwidth is the one computed on that section alone
    params = adata.uns["stmix_neighbors"]["params"]
    c3 = adata[adata.obs["library_id"] == "C3"].copy()
    stmix.pp.neighbors(c3, 10)
    assert params["sigma_by_library"]["C3"] == pytest.approx(
        c3.uns["stmix_neighbors"]["params"]["sigma"]
    )
    np.testing.assert_allclose(
        weights[np.ix_(section == "C3", section == "C3")].toarray(),
        c3.obsp["stmix_weights"].toarray(),
        rtol=1e-6,
    )


def test_the_defaults_are_the_papers():
    """k = 10 spatial neighbours, the Gaussian kernel of eq. 5, the sampled bandwidth's seed 0."""
    assert defaults(stmix.pp.neighbors) == {
        "n_neighbors": 10,
        "basis": "spatial",
        "kernel": "gaussian",
        "sigma": None,
        "layer": None,
        "spatial_key": "spatial",
        "split_key": "stmix_split",
        "library_key": None,
        "key_added": "stmix",
        "seed": 0,
        "copy": False,
    }


def test_a_given_bandwidth_below_one_is_used(c2_log):
    stmix.pp.neighbors(c2_log, 4, sigma=0.5)
    params = c2_log.uns["stmix_neighbors"]["params"]
    assert params["sigma"] == 0.5 and not params["sigma_estimated"]
    assert params["method"] == "kdtree"  # exact spatial neighbours


def test_expression_candidates_need_enough_training_spots(c2_log):
    n_train = int((c2_log.obs["stmix_split"] == "train").sum())
    with pytest.raises(ValueError, match=rf"{n_train} training spots cannot"):
        stmix.pp.neighbors(c2_log, n_train, basis="expression")


def test_sections_by_any_obs_column(c2_log):
    """``library_key`` names any column; partners and bandwidths stay within each section."""
    half = np.where(c2_log.obs["array_row"] < c2_log.obs["array_row"].median(), "top", "bottom")
    c2_log.obs["half"] = half
    stmix.pp.neighbors(c2_log, 5, library_key="half")
    graph = c2_log.obsp["stmix_connectivities"].tocoo()
    assert graph.nnz > 0 and (half[graph.row] == half[graph.col]).all()
    params = c2_log.uns["stmix_neighbors"]["params"]
    assert params["library_key"] == "half" and set(params["sigma_by_library"]) == {"top", "bottom"}
    train = (c2_log.obs["stmix_split"] == "train").to_numpy()
    few = np.flatnonzero(train & (half == "top"))
    c2_log.obs.loc[c2_log.obs_names[few[3:]], "stmix_split"] = "test"  # 3 left on top
    with pytest.raises(ValueError, match="3 training spots of section 'top' cannot"):
        stmix.pp.neighbors(c2_log, 5, library_key="half")


def test_a_spot_far_from_every_other_still_gets_a_distribution(c2_log):
    c2_log.X = c2_log.X.toarray()
    train = np.flatnonzero(c2_log.obs["stmix_split"] == "train")
    c2_log.X[train[0]] += 1e3  # every kernel value of its row underflows
    stmix.pp.neighbors(c2_log, 5)
    row = c2_log.obsp["stmix_weights"][train[0]].toarray()
    assert np.isfinite(row).all() and row.sum() == pytest.approx(1.0, abs=1e-6)


def test_the_sampled_bandwidth_follows_the_seed(c2_log, monkeypatch):
    from stmix.pp import _kernel

    monkeypatch.setattr(_kernel, "EXACT_PAIRS", 1000)  # sample pairs even on one section

    def sigma(seed):
        stmix.pp.neighbors(c2_log, 4, seed=seed)
        return c2_log.uns["stmix_neighbors"]["params"]["sigma"]

    assert sigma(0) == sigma(0) != sigma(1)


def test_a_row_whose_own_index_ties_away_loses_its_last_column():
    index = np.array([[0, 4, 5], [3, 2, 4], [2, 0, 1]])  # row 1 does not list itself
    np.testing.assert_array_equal(_neighbors._drop_self(index, 2), [[4, 5], [3, 2], [0, 1]])


@pytest.mark.parametrize("taken", ["mine_connectivities", "mine_weights"])
def test_a_graph_someone_else_wrote_is_not_replaced(c2_log, taken):
    c2_log.obsp[taken] = sparse.identity(c2_log.n_obs, format="csr")
    before = snapshot(c2_log)
    with pytest.raises(ValueError, match=rf"obsp\['{taken}'\] exists and was not written"):
        stmix.pp.neighbors(c2_log, 3, key_added="mine")
    assert_unchanged(c2_log, before)


def test_two_spots_at_one_position_are_named(c2_log):
    train = np.flatnonzero(c2_log.obs["stmix_split"] == "train")
    c2_log.obsm["spatial"][train[5]] = c2_log.obsm["spatial"][train[2]]
    names = sorted(c2_log.obs_names[train[[2, 5]]])
    with pytest.raises(ValueError, match="share a position") as error:
        stmix.pp.neighbors(c2_log, 3)
    assert all(repr(name) in str(error.value) for name in names)


def test_a_graph_basis_mixes_two_training_spots_but_not_one(c2_log):
    import squidpy as sq

    sq.gr.spatial_neighbors_grid(c2_log, n_neighs=4, n_rings=2)
    graph = c2_log.obsp["spatial_connectivities"].tocoo()
    a, b = graph.row[0], graph.col[0]  # two neighbouring spots
    c2_log.obs["stmix_split"] = "test"
    c2_log.obs.iloc[[a, b], c2_log.obs.columns.get_loc("stmix_split")] = "train"
    stmix.pp.neighbors(c2_log, basis="spatial_connectivities")
    assert c2_log.obsp["stmix_weights"][a, b] == pytest.approx(1.0)
    c2_log.obs.iloc[[b], c2_log.obs.columns.get_loc("stmix_split")] = "test"
    with pytest.raises(ValueError, match="at least two training spots"):
        stmix.pp.neighbors(c2_log, basis="spatial_connectivities")


def test_the_record_says_how_the_graph_was_made(c2_log):
    c2_log.layers["log"] = c2_log.X.copy()
    assert stmix.pp.neighbors(c2_log, 4, layer="log", seed=2) is None  # written in place
    params = dict(c2_log.uns["stmix_neighbors"]["params"])
    assert params.pop("sigma") > 0
    assert params == {
        "n_neighbors": 4,
        "basis": "spatial",
        "kernel": "gaussian",
        "sigma_estimated": True,
        "spatial_key": "spatial",
        "split_key": "stmix_split",
        "n_train": int((c2_log.obs["stmix_split"] == "train").sum()),
        "method": "kdtree",
        "seed": 2,
        "layer": "log",
    }
    assert c2_log.obsp["stmix_connectivities"].dtype == np.float32
    stmix.pp.neighbors(c2_log, 4)
    assert "layer" not in c2_log.uns["stmix_neighbors"]["params"]
