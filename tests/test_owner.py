"""A step never replaces a key it did not write."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import stmix
from tests.support import TINY, assert_unchanged, snapshot


@pytest.mark.parametrize(
    ("step", "key"),
    [
        (lambda a, k: stmix.tl.fit(a, key_added=k, **TINY), "spatial"),  # the images
        (lambda a, k: stmix.pp.patches(a, size=32, key_added=k, progress=False), "spatial"),
        (lambda a, k: stmix.pp.split(a, key_added=k), "array_row"),
        (lambda a, k: stmix.pp.neighbors(a, 5, key_added=k), "spatial_neighbors_like"),
        (lambda a, k: stmix.pp.select_genes(a, 5, method="mean", key_added=k), "highly_variable"),
        (lambda a, k: stmix.tl.complete(a, "median", key_added=k), "counts"),
    ],
)
def test_keys_of_others_are_refused(prepared, step, key):
    prepared.layers["counts"] = prepared.X.copy()
    prepared.var["highly_variable"] = True
    prepared.obsp["spatial_neighbors_like_weights"] = prepared.obsp["stmix_weights"].copy()
    before = snapshot(prepared)
    with pytest.raises(ValueError, match=rf"\[{key!r}\]|{key}.* exists and was not written"):
        step(prepared, key)
    assert_unchanged(prepared, before)


def test_impute_and_evaluate_keep_off_the_counts(prepared):
    model = stmix.tl.fit(prepared, augment="none", **TINY)
    prepared.layers["counts"] = np.zeros(prepared.shape, dtype=np.float32)
    with pytest.raises(ValueError, match=r"layers\['counts'\] exists and was not written"):
        stmix.tl.impute(prepared, model, key_added="counts", progress=False)
    stmix.tl.impute(prepared, model, progress=False)
    prepared.var["stmix_mse"] = 1.0  # a user's column that evaluate would write
    with pytest.raises(ValueError, match=r"var\['stmix_mse'\]"):
        stmix.tl.evaluate(prepared)


def test_a_step_replaces_its_own_keys_and_says_so(prepared, caplog):
    with caplog.at_level(logging.INFO, logger="stmix"):
        stmix.pp.patches(prepared, size=32, progress=False)
    assert (
        "Replacing obsm['stmix_patches'], uns['stmix_patches'] of an earlier stmix.pp.patches"
        in caplog.text
    )
    assert prepared.uns["stmix_patches"]["writer"] == "stmix.pp.patches"
    # a record of another step under the same name is not this step's
    prepared.uns["mine"] = {"writer": "stmix.tl.fit", "params": {}}
    with pytest.raises(ValueError, match=r"was not written by stmix\.tl\.fit"):
        stmix.pp.patches(prepared, size=32, key_added="mine", progress=False)


@pytest.fixture(scope="module")
def _analysed(_prepared_c2):
    """Real C2 after scanpy's and squidpy's own steps: pca, neighbors, leiden, spatial graph."""
    import scanpy as sc
    import squidpy as sq

    adata = _prepared_c2.copy()
    sc.pp.pca(adata, n_comps=8)
    sc.pp.neighbors(adata, n_neighbors=10, transformer="sklearn")
    sc.tl.leiden(adata, flavor="igraph", n_iterations=2, directed=False)
    sq.gr.spatial_neighbors_knn(adata)
    return adata


EMBED = {"backbone": "test_efficientnet", "pretrained": False, "progress": False}
#: Each stmix writer given a key that scanpy or squidpy wrote, and that key's container.
FOREIGN = {
    "split-leiden": (lambda a: stmix.pp.split(a, key_added="leiden"), ("obs", "leiden")),
    "neighbors-spatial": (
        lambda a: stmix.pp.neighbors(a, 5, key_added="spatial"),
        ("obsp", "spatial_connectivities"),
    ),
    "fit-neighbors": (
        lambda a: stmix.tl.fit(a, key_added="neighbors", **TINY),
        ("uns", "neighbors"),
    ),
    "embed-pca": (lambda a: stmix.tl.embed(a, key_added="pca", **EMBED), ("uns", "pca")),
    "complete-pca": (lambda a: stmix.tl.complete(a, "median", key_added="pca"), ("uns", "pca")),
    "patches-X_pca": (
        lambda a: stmix.pp.patches(a, size=32, key_added="X_pca", progress=False),
        ("obsm", "X_pca"),
    ),
    "select_genes-leiden": (
        lambda a: stmix.pp.select_genes(a, 5, method="mean", key_added="leiden"),
        ("uns", "leiden"),
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_scanpy_and_squidpy_results_survive_every_writer(_analysed, case):
    import scanpy as sc

    step, (container, name) = FOREIGN[case]
    adata = _analysed.copy()
    before = snapshot(adata)
    kept = {k: dict(adata.uns[k]["params"]) for k in ("pca", "neighbors", "leiden")}
    with pytest.raises(ValueError, match="exists and was not written"):
        step(adata)
    assert_unchanged(adata, before)
    assert {k: dict(adata.uns[k]["params"]) for k in kept} == kept
    assert adata.uns["spatial_neighbors"]["connectivities_key"] == "spatial_connectivities"
    held = getattr(adata, container)
    assert name in (held.columns if container == "obs" else held)
    sc.tl.leiden(adata, flavor="igraph", n_iterations=2, directed=False, key_added="again")
    assert (adata.obs["again"] == adata.obs["leiden"]).all()  # scanpy's graph is intact


@pytest.mark.parametrize("key", ["", "a/b", "_index", None])
def test_key_names_that_h5ad_cannot_keep_are_refused_before_work(prepared, key):
    model = stmix.tl.fit(prepared, augment="none", **{**TINY, "epochs": 1})
    before = snapshot(prepared)
    steps = [
        lambda: stmix.tl.impute(prepared, model, key_added=key, progress=False),
        lambda: stmix.tl.predict(prepared, model, key_added=key, progress=False),
        lambda: stmix.tl.fit(prepared, key_added=key, **TINY),
        lambda: stmix.pp.split(prepared, key_added=key),
        lambda: stmix.pp.neighbors(prepared, 5, key_added=key),
        lambda: stmix.tl.evaluate(prepared, key_added=key),
    ]
    for step in steps:
        with pytest.raises(ValueError, match="key_added"):
            step()
    assert_unchanged(prepared, before)
