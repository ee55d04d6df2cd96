from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc

import stmix
from tests.support import assert_unchanged, snapshot


@pytest.fixture
def c2_log(her2st):
    adata = her2st("C2")
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    keep = np.asarray((adata.X > 0).sum(axis=0)).ravel() >= 10
    return adata[:, keep].copy()


def test_moran_ranks_by_squidpys_morans_i(c2_log):
    import squidpy as sq

    stmix.pp.select_genes(c2_log, 30, method="moran")
    assert c2_log.var["stmix_selected"].sum() == 30
    assert "moranI" not in c2_log.uns and "spatial_connectivities" not in c2_log.obsp
    work = c2_log.copy()
    sq.gr.spatial_neighbors_knn(work, n_neighs=6)
    sq.gr.spatial_autocorr(work, mode="moran", n_perms=None, show_progress_bar=False)
    expected = work.uns["moranI"]["I"].reindex(c2_log.var_names).to_numpy()
    np.testing.assert_allclose(c2_log.var["stmix_selected_score"], expected, rtol=1e-6)
    chosen = c2_log.var["stmix_selected_score"][c2_log.var["stmix_selected"]]
    others = c2_log.var["stmix_selected_score"][~c2_log.var["stmix_selected"]]
    assert chosen.min() >= others.max()
    assert chosen.min() > 0.2  # real tissue structure: these genes are spatially patterned
    assert c2_log.uns["stmix_selected"]["params"]["method"] == "moran"


def test_mean_reproduces_the_reference_gene_list(her2st, reference):
    adata = her2st("C3")
    sc.pp.filter_cells(adata, min_genes=1)
    sc.pp.filter_genes(adata, min_cells=1)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    stmix.pp.select_genes(adata, 250, method="mean")
    chosen = set(adata.var_names[adata.var["stmix_selected"].to_numpy()])
    assert chosen == set(reference["gene_names"])


def test_hvg(c2_log):
    out = stmix.pp.select_genes(c2_log, 40, method="hvg", key_added="hv", copy=True)
    assert out.var["hv"].sum() == 40 and "hv" not in c2_log.var
    score = out.var["hv_score"]
    assert score[out.var["hv"]].min() >= score[~out.var["hv"]].max()


def test_genes_chosen_on_the_training_spots_only(c2_log):
    adata = c2_log.copy()
    stmix.pp.split(adata, 0.3, 0.2, seed=0)
    train = (adata.obs["stmix_split"] == "train").to_numpy()
    stmix.pp.select_genes(adata, 50, method="mean", split="train")
    x = adata.X[train].toarray() if hasattr(adata.X, "toarray") else adata.X[train]
    mean_on_train = np.where(x.std(axis=0) > 0, x.mean(axis=0), np.nan)  # constant: no score
    np.testing.assert_allclose(adata.var["stmix_selected_score"], mean_on_train, rtol=1e-5)
    expected = set(adata.var_names[np.argsort(-np.nan_to_num(mean_on_train, nan=-1))[:50]])
    assert set(adata.var_names[adata.var["stmix_selected"].to_numpy()]) == expected
    everywhere = stmix.pp.select_genes(adata, 50, method="mean", key_added="all", copy=True)
    assert (everywhere.var["all"] != adata.var["stmix_selected"]).any()  # the test spots differ
    assert adata.uns["stmix_selected"]["params"]["split"] == "train"
    before = snapshot(adata)
    with pytest.raises(KeyError, match=r"stmix\.pp\.split"):
        stmix.pp.select_genes(adata, 50, method="mean", split="train", split_key="nope")
    assert_unchanged(adata, before)


@pytest.mark.parametrize(
    ("kwargs", "change", "error", "match"),
    [
        ({"method": "variance"}, None, ValueError, "method"),
        ({"n": 10**6}, None, ValueError, "genes vary"),
        ({"n": 0}, None, ValueError, "positive"),
        ({}, "no_spatial", KeyError, "spatial"),
        ({}, "nan", ValueError, "NaN"),
    ],
)
def test_bad_input(c2_log, kwargs, change, error, match):
    if change == "no_spatial":
        del c2_log.obsm["spatial"]
    elif change == "nan":
        c2_log.X = c2_log.X.toarray()
        c2_log.X[0, 0] = np.nan
    before = snapshot(c2_log)
    with pytest.raises(error, match=match):
        stmix.pp.select_genes(c2_log, **kwargs)
    assert_unchanged(c2_log, before)
