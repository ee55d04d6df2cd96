from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import stmix
from tests.conftest import TINY, assert_unchanged, snapshot


@pytest.fixture
def model(prepared):
    return stmix.tl.fit(prepared, genes=list(prepared.var_names[:10]), augment="none", **TINY)


def test_predictions_for_the_models_genes_only(prepared, model):
    layers, obsm = set(prepared.layers), set(prepared.obsm)
    stmix.tl.impute(prepared, model, progress=False)
    frame = prepared.obsm["stmix"]
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == model.genes
    assert list(frame.index) == list(prepared.obs_names) and frame.dtypes.eq(np.float32).all()
    expected = np.maximum(model.predict(prepared.obsm["stmix_patches"]), 0)
    np.testing.assert_array_equal(frame.to_numpy(), expected)
    assert set(prepared.layers) == layers  # no dense block over all genes
    assert set(prepared.obsm) == obsm | {"stmix"}
    assert prepared.uns["stmix_impute"]["params"]["n_genes"] == 10


def test_clip_at_zero_and_off(prepared):
    # the expression target and a fresh head predict negative values for some spots
    model = stmix.tl.fit(
        prepared, augment="none", **{**TINY, "epochs": 1}, plan_kwargs={"target": "expression"}
    )
    raw = stmix.tl.impute(prepared, model, clip=False, copy=True, progress=False)
    clipped = stmix.tl.impute(prepared, model, copy=True, progress=False)
    raw, clipped = raw.obsm["stmix"].to_numpy(), clipped.obsm["stmix"].to_numpy()
    assert (raw < 0).any()
    np.testing.assert_array_equal(clipped, np.maximum(raw, 0))


def test_copy_leaves_the_input_and_var_order_does_not_matter(prepared, model):
    shuffled = prepared[:, prepared.var_names[::-1]].copy()
    before = snapshot(shuffled)
    out = stmix.tl.impute(shuffled, model, copy=True, progress=False)
    assert_unchanged(shuffled, before)
    expected = np.maximum(model.predict(prepared.obsm["stmix_patches"]), 0)
    np.testing.assert_array_equal(out.obsm["stmix"][model.genes].to_numpy(), expected)


def test_a_section_without_expression(her2st, prepared, model, tmp_path):
    """Only an H&E image and spot positions: predictions for the model's genes."""
    measured = her2st("C2")
    unmeasured = ad.AnnData(obs=pd.DataFrame(index=measured.obs_names))
    unmeasured.obsm["spatial"] = measured.obsm["spatial"]
    unmeasured.uns["spatial"] = measured.uns["spatial"]
    assert unmeasured.n_vars == 0
    stmix.pp.patches(unmeasured, size=model.patch_size, progress=False)
    stmix.tl.impute(unmeasured, model, progress=False)
    np.testing.assert_array_equal(
        unmeasured.obsm["stmix"].to_numpy(),
        np.maximum(model.predict(prepared.obsm["stmix_patches"]), 0),
    )
    pred = stmix.tl.predictions(unmeasured)
    assert list(pred.var_names) == model.genes and pred.n_obs == unmeasured.n_obs
    assert "stmix_patches" not in pred.obsm and "spatial" in pred.uns
    axes = sc.pl.spatial(pred, color=model.genes[0], show=False)  # scanpy draws it on the image
    assert axes[0].get_title() == model.genes[0]
    unmeasured.write_h5ad(tmp_path / "unmeasured.h5ad")
    back = ad.read_h5ad(tmp_path / "unmeasured.h5ad")
    pd.testing.assert_frame_equal(back.obsm["stmix"], unmeasured.obsm["stmix"])
    with pytest.raises(ValueError, match="no measurement"):
        stmix.tl.evaluate(unmeasured, split=None)


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


def test_layer_is_the_old_name_of_key_added(prepared, model):
    with pytest.warns(FutureWarning, match="key_added"):
        stmix.tl.impute(prepared, model, layer="old", progress=False)
    assert "old" in prepared.obsm


def test_evaluate_reads_predictions_by_name_and_layers_made_by_users(prepared, model):
    stmix.tl.impute(prepared, model, progress=False)
    from_obsm = stmix.tl.evaluate(prepared)
    assert list(from_obsm.index) == model.genes
    # a user's own layer of predictions (NaN where it predicts nothing) is read the same way
    layer = np.full(prepared.shape, np.nan, dtype=np.float32)
    layer[:, :10] = prepared.obsm["stmix"].to_numpy()
    prepared.layers["mine"] = layer
    pd.testing.assert_frame_equal(stmix.tl.evaluate(prepared, layer="mine"), from_obsm)
