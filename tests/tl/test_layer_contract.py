"""The predictions' layer is read where scanpy and squidpy look, after a round trip through h5ad."""

from __future__ import annotations

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import scanpy as sc
from scipy import sparse

import stmix
from tests.support import TINY


@pytest.fixture(scope="module")
def imputed(_prepared_c2, data_dir, tmp_path_factory):
    """All of C2's genes, 10 of them predicted into a sparse layer, written and read back."""
    prepared = _prepared_c2.copy()
    tmp_path = tmp_path_factory.mktemp("contract")
    model = stmix.tl.fit(prepared, genes=list(prepared.var_names[:10]), augment="none", **TINY)
    whole = stmix.datasets.her2st("C2", root=data_dir / "her2st")
    sc.pp.normalize_total(whole, target_sum=1e4)
    sc.pp.log1p(whole)
    whole.obs["stmix_split"] = prepared.obs["stmix_split"]
    whole.obsm["stmix_patches"] = prepared.obsm["stmix_patches"]
    whole.uns["stmix_patches"] = prepared.uns["stmix_patches"]
    stmix.tl.impute(whole, model, progress=False)
    del whole.obsm["stmix_patches"]
    whole.write_h5ad(tmp_path / "imputed.h5ad")
    return ad.read_h5ad(tmp_path / "imputed.h5ad"), model, whole


def test_the_layer_and_the_var_column_survive_h5ad(imputed):
    back, model, written = imputed
    assert sparse.issparse(back.layers["stmix"]) and back.layers["stmix"].dtype == np.float32
    assert (back.layers["stmix"] != written.layers["stmix"]).nnz == 0
    assert back.var["stmix_predicted"].dtype == bool
    assert back.var["stmix_predicted"].equals(written.var["stmix_predicted"])
    assert back.uns["stmix_impute"]["params"]["genes"].tolist() == model.genes
    pred = stmix.tl.predictions(back)
    assert list(pred.var_names) == model.genes
    table = stmix.tl.evaluate(back, split="test")
    assert list(table.index) == model.genes and np.isfinite(table["mse"]).all()


def test_scanpy_spatial_draws_the_layer(imputed):
    back, model, _ = imputed
    gene = model.genes[0]
    axes = sc.pl.spatial(back, color=gene, layer="stmix", show=False)
    drawn = np.asarray(axes[0].collections[0].get_array(), dtype=float)
    column = back[:, gene].layers["stmix"].toarray().ravel()
    np.testing.assert_allclose(np.sort(drawn), np.sort(column), rtol=1e-6)  # the predictions
    assert not np.allclose(np.sort(drawn), np.sort(back[:, gene].X.toarray().ravel()))
    plt.close("all")


def test_squidpy_morans_i_of_the_layer(imputed):
    import squidpy as sq

    back, model, _ = imputed
    sq.gr.spatial_neighbors_knn(back, n_neighs=6)
    layer = sq.gr.spatial_autocorr(
        back, mode="moran", genes=model.genes, layer="stmix", n_perms=None, copy=True
    )
    alone = stmix.tl.predictions(back)  # the same values as an AnnData of their own
    alone.obsp["spatial_connectivities"] = back.obsp["spatial_connectivities"]
    expected = sq.gr.spatial_autocorr(
        alone, mode="moran", genes=model.genes, n_perms=None, copy=True
    )
    np.testing.assert_allclose(layer.loc[model.genes, "I"], expected.loc[model.genes, "I"])
    assert layer["I"].notna().all()


def test_scanpy_rank_genes_groups_on_the_layer(imputed):
    back, model, _ = imputed
    sc.tl.rank_genes_groups(back, "stmix_split", layer="stmix", method="t-test")
    names = back.uns["rank_genes_groups"]["names"]
    assert back.uns["rank_genes_groups"]["params"]["layer"] == "stmix"
    top = {names[group][0] for group in ("train", "val", "test")}
    assert top <= set(model.genes)  # only predicted genes differ between groups
