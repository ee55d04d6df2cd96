from __future__ import annotations

import numpy as np
import pytest

import stmix
from tests.conftest import TINY, assert_unchanged, snapshot


@pytest.fixture
def model(prepared):
    return stmix.tl.fit(prepared, genes=list(prepared.var_names[:10]), augment="none", **TINY)


def test_predictions_for_every_spot(prepared, model):
    stmix.tl.impute(prepared, model, progress=False)
    layer = prepared.layers["stmix"]
    np.testing.assert_array_equal(layer[:, :10], model.predict(prepared.obsm["stmix_patches"]))
    assert np.isnan(layer[:, 10:]).all()


def test_genes_in_another_order_and_copy(prepared, model):
    shuffled = prepared[:, prepared.var_names[::-1]].copy()
    before = snapshot(shuffled)
    out = stmix.tl.impute(shuffled, model, copy=True, progress=False)
    assert_unchanged(shuffled, before)
    expected = model.predict(prepared.obsm["stmix_patches"])
    np.testing.assert_array_equal(out[:, model.genes].layers["stmix"], expected)


def test_missing_genes(prepared, model):
    adata = prepared[:, prepared.var_names[3:]].copy()
    before = snapshot(adata)
    with pytest.raises(KeyError, match=r"lacks 3 of the model's 10 genes"):
        stmix.tl.impute(adata, model, progress=False)
    assert_unchanged(adata, before)


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


def test_layer_is_the_old_name_of_key_added(prepared):
    model = stmix.tl.fit(prepared, augment="none", **TINY)
    with pytest.warns(FutureWarning, match="key_added"):
        stmix.tl.impute(prepared, model, layer="old", progress=False)
    assert "old" in prepared.layers
