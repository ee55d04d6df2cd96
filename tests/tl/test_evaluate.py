from __future__ import annotations

import numpy as np
import pytest

import stmix
from stmix._metrics import gene_metrics
from tests.support import assert_unchanged, snapshot


def _with_predictions(adata, noise=0.3):
    rng = np.random.default_rng(0)
    layer = np.full(adata.shape, np.nan, dtype=np.float32)
    layer[:, :12] = adata.X[:, :12] + rng.normal(scale=noise, size=(adata.n_obs, 12))
    adata.layers["stmix"] = layer
    return adata


def test_metrics_on_the_test_split(prepared):
    adata = _with_predictions(prepared)
    table = stmix.tl.evaluate(adata)
    test = (adata.obs["stmix_split"] == "test").to_numpy()
    expected = gene_metrics(adata.X[test][:, :12], adata.layers["stmix"][test][:, :12])
    np.testing.assert_allclose(table["mse"], expected["mse"], rtol=1e-6)
    np.testing.assert_allclose(table["pcc"], expected["pcc"], rtol=1e-6)
    assert list(table.index) == list(adata.var_names[:12])
    np.testing.assert_allclose(adata.var["stmix_mae"][:12], expected["mae"], rtol=1e-6)
    assert adata.var["stmix_mae"][12:].isna().all()
    metrics = adata.uns["stmix_metrics"]
    assert metrics["mse"] == pytest.approx(expected["mse"].mean())
    assert metrics["n_genes"] == 12 and metrics["split"] == "test"


def test_better_predictions_score_better(prepared):
    good = stmix.tl.evaluate(_with_predictions(prepared.copy(), 0.1))
    bad = stmix.tl.evaluate(_with_predictions(prepared.copy(), 1.0))
    assert good["mse"].mean() < bad["mse"].mean()
    assert good["pcc"].mean() > bad["pcc"].mean()


def test_all_spots_and_other_splits(prepared):
    adata = _with_predictions(prepared)
    stmix.tl.evaluate(adata, split=None)
    assert adata.uns["stmix_metrics"]["n_spots"] == adata.n_obs
    stmix.tl.evaluate(adata, split="val")
    assert adata.uns["stmix_metrics"]["n_spots"] == (adata.obs["stmix_split"] == "val").sum()


def test_errors_leave_adata_unchanged(prepared):
    before = snapshot(prepared)
    with pytest.raises(KeyError, match=r"stmix\.tl\.impute"):
        stmix.tl.evaluate(prepared)
    assert_unchanged(prepared, before)
    adata = _with_predictions(prepared)
    before = snapshot(adata)
    with pytest.raises(ValueError, match="split"):
        stmix.tl.evaluate(adata, split="holdout")
    with pytest.raises(KeyError, match="nope"):
        stmix.tl.evaluate(adata, layer="nope")
    assert_unchanged(adata, before)
