"""A step never replaces a key it did not write."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import stmix
from tests.conftest import TINY, assert_unchanged, snapshot


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
    prepared.obsm["counts"] = np.zeros((prepared.n_obs, 3))
    with pytest.raises(ValueError, match=r"obsm\['counts'\] exists and was not written"):
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
