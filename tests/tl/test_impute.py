from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import stmix
from tests.support import TINY, assert_unchanged, snapshot


@pytest.fixture
def model(prepared):
    return stmix.tl.fit(prepared, genes=list(prepared.var_names[:10]), augment="none", **TINY)


def _layer(adata, genes, key="stmix") -> np.ndarray:
    matrix = adata[:, genes].layers[key]
    return matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)


def test_predictions_in_a_layer_for_the_models_genes(prepared, model):
    layers, obsm = set(prepared.layers), set(prepared.obsm)
    stmix.tl.impute(prepared, model, progress=False)
    assert set(prepared.layers) == layers | {"stmix"} and set(prepared.obsm) == obsm  # no copy
    assert prepared.layers["stmix"].dtype == np.float32
    expected = np.maximum(model.predict(prepared.obsm["stmix_patches"]), 0)
    np.testing.assert_array_equal(_layer(prepared, model.genes), expected)
    marked = prepared.var["stmix_predicted"]
    assert marked.dtype == bool and list(prepared.var_names[marked]) == sorted(
        model.genes, key=list(prepared.var_names).index
    )
    others = prepared.var_names[~marked]
    assert not _layer(prepared, others).any()  # genes not predicted hold nothing
    record = prepared.uns["stmix_impute"]
    assert record["writer"] == "stmix.tl.impute" and record["params"]["n_genes"] == 10
    assert record["params"]["layer"] == "stmix"


def test_a_few_genes_of_many_make_a_compact_layer(her2st, prepared, model, tmp_path):
    """10 predicted genes over a section's thousands: a CSR holding the 10 columns only."""
    whole = her2st("C2")
    sc.pp.normalize_total(whole, target_sum=1e4)
    sc.pp.log1p(whole)
    whole.obsm["stmix_patches"] = prepared.obsm["stmix_patches"]
    whole.uns["stmix_patches"] = prepared.uns["stmix_patches"]
    whole.write_h5ad(tmp_path / "before.h5ad")
    stmix.tl.impute(whole, model, progress=False)
    layer = whole.layers["stmix"]
    assert sparse.issparse(layer) and layer.nnz == whole.n_obs * 10 and whole.n_vars > 10_000
    whole.write_h5ad(tmp_path / "after.h5ad")
    growth = (tmp_path / "after.h5ad").stat().st_size - (tmp_path / "before.h5ad").stat().st_size
    values = whole.n_obs * 10 * 4  # float32 predictions
    assert growth < 3 * values + 200_000  # values, their column indices, the var column
    back = ad.read_h5ad(tmp_path / "after.h5ad")
    np.testing.assert_array_equal(_layer(back, model.genes), _layer(whole, model.genes))
    assert back.var["stmix_predicted"].sum() == 10


def test_clip_at_zero_and_off(prepared):
    # the expression target and a fresh head predict negative values for some spots
    model = stmix.tl.fit(
        prepared, augment="none", **{**TINY, "epochs": 1}, plan_kwargs={"target": "expression"}
    )
    raw = stmix.tl.impute(prepared, model, clip=False, copy=True, progress=False)
    clipped = stmix.tl.impute(prepared, model, copy=True, progress=False)
    raw, clipped = _layer(raw, model.genes), _layer(clipped, model.genes)
    assert (raw < 0).any()
    np.testing.assert_array_equal(clipped, np.maximum(raw, 0))


def test_copy_leaves_the_input_and_var_order_does_not_matter(prepared, model):
    shuffled = prepared[:, prepared.var_names[::-1]].copy()
    before = snapshot(shuffled)
    out = stmix.tl.impute(shuffled, model, copy=True, progress=False)
    assert_unchanged(shuffled, before)
    expected = np.maximum(model.predict(prepared.obsm["stmix_patches"]), 0)
    np.testing.assert_array_equal(_layer(out, model.genes), expected)


def test_a_section_without_expression(her2st, prepared, model, tmp_path):
    """Only an H&E image and spot positions: an AnnData of the model's genes, in X."""
    measured = her2st("C2")
    unmeasured = ad.AnnData(obs=pd.DataFrame(index=measured.obs_names))
    unmeasured.obsm["spatial"] = measured.obsm["spatial"]
    unmeasured.uns["spatial"] = measured.uns["spatial"]
    assert unmeasured.n_vars == 0
    stmix.pp.patches(unmeasured, size=model.patch_size, progress=False)
    before = snapshot(unmeasured)
    with pytest.raises(ValueError, match=r"stmix\.tl\.predict\(adata, model\)"):
        stmix.tl.impute(unmeasured, model, progress=False)
    assert_unchanged(unmeasured, before)
    pred = stmix.tl.predict(unmeasured, model, progress=False)
    assert_unchanged(unmeasured, before)
    np.testing.assert_array_equal(
        pred.X, np.maximum(model.predict(prepared.obsm["stmix_patches"]), 0)
    )
    assert list(pred.var_names) == model.genes and pred.n_obs == unmeasured.n_obs
    assert "stmix_patches" not in pred.obsm and "spatial" in pred.uns and "spatial" in pred.obsm
    assert pred.uns["stmix_impute"]["params"]["layer"] is None
    kept = stmix.tl.predict(unmeasured, model, keep_patches=True, progress=False)
    assert kept.obsm["stmix_patches"].shape == unmeasured.obsm["stmix_patches"].shape
    pred.write_h5ad(tmp_path / "unmeasured.h5ad")
    back = ad.read_h5ad(tmp_path / "unmeasured.h5ad")
    axes = sc.pl.spatial(back, color=model.genes[0], show=False)  # scanpy draws it on the image
    assert axes[0].get_title() == model.genes[0]
    pd.testing.assert_frame_equal(back.to_df(), pred.to_df())
    with pytest.raises(ValueError, match="no measurement"):
        stmix.tl.evaluate(back, split=None)


def test_patches_of_another_size(prepared, model):
    stmix.pp.patches(prepared, size=40, progress=False)
    before = snapshot(prepared)
    with pytest.raises(ValueError, match=r"stmix\.pp\.patches\(adata, size=32\)"):
        stmix.tl.impute(prepared, model, progress=False)
    assert_unchanged(prepared, before)
    del prepared.obsm["stmix_patches"]
    with pytest.raises(KeyError, match=r"stmix\.pp\.patches"):
        stmix.tl.impute(prepared, model, progress=False)


def test_other_magnification_warns(prepared, model, caplog):
    stmix.pp.patches(prepared, size=32, spot_scale=2.0, progress=False)
    stmix.tl.impute(prepared, model, progress=False)
    assert "spot_scale=2.0" in caplog.text


def test_predictions_returns_the_layer_as_an_anndata(prepared, model):
    stmix.tl.impute(prepared, model, progress=False)
    pred = stmix.tl.predictions(prepared)
    assert list(pred.var_names) == model.genes and "stmix_patches" not in pred.obsm
    np.testing.assert_array_equal(pred.X, _layer(prepared, model.genes))


def test_model_genes_missing_from_var_are_named(prepared, model, caplog):
    part = prepared[:, [g for g in prepared.var_names if g != model.genes[3]]].copy()
    stmix.tl.impute(part, model, progress=False)
    assert "1 of the model's 10 genes" in caplog.text and model.genes[3] in caplog.text
    assert part.var["stmix_predicted"].sum() == 9


def test_a_file_of_the_earlier_obsm_layout_is_read_and_replaced(prepared, model):
    stmix.tl.impute(prepared, model, progress=False)
    expected = stmix.tl.evaluate(prepared)
    old = prepared.copy()
    old.obsm["stmix"] = stmix.tl.predictions(prepared).to_df()
    del old.layers["stmix"], old.var["stmix_predicted"]
    pd.testing.assert_frame_equal(stmix.tl.evaluate(old), expected)
    stmix.tl.impute(old, model, progress=False)
    assert "stmix" not in old.obsm and "stmix" in old.layers  # nothing kept twice


def test_evaluate_reads_predictions_by_key_and_layers_made_by_users(prepared, model):
    stmix.tl.impute(prepared, model, progress=False)
    from_layer = stmix.tl.evaluate(prepared)
    assert list(from_layer.index) == model.genes
    # a user's own layer of predictions (NaN where it predicts nothing) is read the same way
    layer = np.full(prepared.shape, np.nan, dtype=np.float32)
    layer[:, prepared.var_names.get_indexer(model.genes)] = _layer(prepared, model.genes)
    prepared.layers["mine"] = layer
    pd.testing.assert_frame_equal(stmix.tl.evaluate(prepared, key="mine"), from_layer)
