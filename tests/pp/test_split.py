from __future__ import annotations

import numpy as np
import pytest

import stmix
from tests.conftest import assert_unchanged, snapshot


@pytest.mark.parametrize("section", ["C2", "C6"])
def test_counts_are_the_papers_floors(her2st, section):
    adata = her2st(section)
    stmix.pp.split(adata)
    counts = adata.obs["stmix_split"].value_counts()
    n = adata.n_obs
    assert counts["train"] == int(np.floor(n * 0.3))
    assert counts["val"] == int(np.floor(n * 0.2))
    assert counts["test"] == n - counts["train"] - counts["val"]
    assert list(adata.obs["stmix_split"].cat.categories) == ["train", "val", "test"]


def test_split_matches_the_reference_permutation(her2st, reference):
    adata = her2st("C3")
    assert list(adata.obs_names) == list(reference["obs_names"])
    stmix.pp.split(adata, 0.3, 0.2, seed=0)
    labels = adata.obs["stmix_split"].to_numpy()
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(
            np.sort(np.flatnonzero(labels == name)), np.sort(reference[name])
        )


def test_seed_decides(her2st):
    adata = her2st("C2")
    a = stmix.pp.split(adata, seed=1, copy=True).obs["stmix_split"]
    b = stmix.pp.split(adata, seed=1, copy=True).obs["stmix_split"]
    c = stmix.pp.split(adata, seed=2, copy=True).obs["stmix_split"]
    assert a.equals(b)
    assert not a.equals(c)
    assert "stmix_split" not in adata.obs  # copy=True wrote nothing into the input


def test_key_added(her2st):
    adata = her2st("C2")
    stmix.pp.split(adata, 0.5, 0.0, key_added="fold")
    assert set(adata.obs["fold"]) == {"train", "test"}


@pytest.mark.parametrize(
    ("train", "val", "message"),
    [
        (0.0, 0.2, "train"),
        (1.2, 0.0, "train"),
        (0.3, -0.1, "val"),
        (0.6, 0.4, "no test"),
        (0.001, 0.2, "no training spot"),
    ],
)
def test_fractions_that_do_not_fit(her2st, train, val, message):
    adata = her2st("C2")
    before = snapshot(adata)
    with pytest.raises(ValueError, match=message):
        stmix.pp.split(adata, train, val)
    assert_unchanged(adata, before)
