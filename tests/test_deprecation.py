"""Renamed parameters keep working for one version, with a FutureWarning that names the new one."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import stmix


@pytest.fixture
def scored(prepared):
    """C2 with predictions in ``layers["stmix"]`` as tl.impute marks them, and a truth layer."""
    rng = np.random.default_rng(0)
    prepared.layers["stmix"] = (prepared.X + rng.normal(0, 0.3, prepared.shape)).astype("f4")
    prepared.var["stmix_predicted"] = True
    prepared.layers["log"] = prepared.X.copy()
    return prepared


def test_evaluate_truth_layer_and_the_old_layer(scored):
    expected = stmix.tl.evaluate(scored, key="stmix", layer="log")
    with pytest.warns(FutureWarning, match=r"truth_layer=\.\.\.\) is renamed layer=\.\.\."):
        old = stmix.tl.evaluate(scored, layer="stmix", truth_layer="log")
    pd.testing.assert_frame_equal(old, expected)
    assert scored.uns["stmix_metrics"]["key"] == "stmix"
    assert scored.uns["stmix_metrics"]["layer"] == "log"


def test_evaluate_layer_naming_predictions_is_read_as_key(scored):
    expected = stmix.tl.evaluate(scored)
    with pytest.warns(FutureWarning, match=r"key=\.\.\."):
        old = stmix.tl.evaluate(scored, layer="stmix")  # 0.1: layer was the predictions
    pd.testing.assert_frame_equal(old, expected)
    assert scored.uns["stmix_metrics"]["pcc"] < 0.99  # not the predictions scored on themselves


def test_select_genes_n_neighs(her2st):
    import scanpy as sc

    adata = her2st("C2")[:, :300].copy()
    sc.pp.log1p(adata)
    new = stmix.pp.select_genes(adata, 10, n_neighbors=4, copy=True)
    with pytest.warns(FutureWarning, match=r"select_genes\(n_neighs=\.\.\.\) is renamed"):
        old = stmix.pp.select_genes(adata, 10, n_neighs=4, copy=True)
    pd.testing.assert_frame_equal(old.var, new.var)
    assert old.uns["stmix_selected"]["params"]["n_neighbors"] == 4
    with pytest.raises(TypeError, match="both"):
        stmix.pp.select_genes(adata, 10, n_neighs=4, n_neighbors=4)


def test_gene_errors_truth_layer(scored):
    with pytest.warns(FutureWarning, match="gene_errors"):
        fig = stmix.pl.gene_errors(scored, "log", "stmix", truth_layer="log", show=False)
    assert "better for" in fig.axes[0].get_title()
    plt.close(fig)


def test_maps_layers(scored):
    gene = scored.var_names[0]
    with pytest.warns(FutureWarning, match=r"maps\(layers=\.\.\.\)"):
        fig = stmix.pl.maps(scored, gene, layers=(None, "stmix"), show=False)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [f"{gene} · measured", f"{gene} · stmix"]
    plt.close(fig)
