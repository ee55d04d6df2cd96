from __future__ import annotations

import numpy as np
import pytest

import stmix
from tests.support import assert_unchanged, snapshot


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


def test_held_out_sections(c2_to_c6):
    adata = c2_to_c6.copy()
    stmix.pp.split(adata, test=["C5"], val=["C4"], library_key="library_id")
    table = adata.obs.groupby("library_id", observed=True)["stmix_split"].agg(set)
    assert table["C5"] == {"test"} and table["C4"] == {"val"}
    assert all(table[s] == {"train"} for s in ("C2", "C3", "C6"))
    params = adata.uns["stmix_split"]["params"]
    assert params["test"] == ["C5"] and params["val"] == ["C4"] and params["by"] == "library"
    assert params["train"] == ["C2", "C3", "C6"]


def test_held_out_test_section_with_validation_spots(c2_to_c6):
    adata = c2_to_c6.copy()
    stmix.pp.split(adata, test=["C2"], val=0.1, seed=3)  # library_key found: obs["library_id"]
    labels = adata.obs["stmix_split"].to_numpy()
    c2 = (adata.obs["library_id"] == "C2").to_numpy()
    assert (labels[c2] == "test").all()
    # every training section validates a tenth of its own spots, not a share of a pooled draw
    for name in ("C3", "C4", "C5", "C6"):
        here = labels[(adata.obs["library_id"] == name).to_numpy()]
        assert (here == "val").sum() == int(np.floor(len(here) * 0.1)), name
        assert (here == "train").sum() == len(here) - int(np.floor(len(here) * 0.1)), name
    again = c2_to_c6.copy()
    stmix.pp.split(again, test=["C2"], val=0.1, seed=3)
    assert (again.obs["stmix_split"].to_numpy() == labels).all()  # the seed fixes the draw
    stmix.pp.split(again, test=["C2"], val=0.1, seed=4)
    assert (again.obs["stmix_split"].to_numpy() != labels).any()


def test_a_fraction_of_sections(c2_to_c6):
    adata = c2_to_c6.copy()
    stmix.pp.split(adata, 0.6, 0.2, by="library", seed=1)
    per_section = adata.obs.groupby("library_id", observed=True)["stmix_split"].agg(set)
    assert all(len(labels) == 1 for labels in per_section)  # whole sections
    counts = {label: sum(v == {label} for v in per_section) for label in ("train", "val", "test")}
    assert counts == {"train": 3, "val": 1, "test": 1}


def test_by_spot_within_each_section(c2_to_c6):
    adata = c2_to_c6.copy()
    stmix.pp.split(adata)
    for name, group in adata.obs.groupby("library_id", observed=True):
        counts = group["stmix_split"].value_counts()
        assert counts["train"] == int(np.floor(len(group) * 0.3)), name
        assert counts["val"] == int(np.floor(len(group) * 0.2)), name


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"test": ["C9"]}, KeyError, r"do not exist: \['C9'\]; the sections are"),
        ({"test": ["C5"], "val": ["C5"]}, ValueError, "both a test and a validation"),
        ({"test": ["C2", "C3", "C4", "C5", "C6"]}, ValueError, "none is left to train"),
        (
            {"test": ["C5"], "library_key": "sample"},
            KeyError,
            "library_key='sample'. is not a column",
        ),
        ({"by": "library", "train": 0.1, "val": 0.1}, ValueError, "no training or no test"),
        ({"by": "slide"}, ValueError, "by"),
    ],
)
def test_bad_sections_leave_adata_unchanged(c2_to_c6, kwargs, error, match):
    adata = c2_to_c6.copy()
    before = snapshot(adata)
    with pytest.raises(error, match=match):
        stmix.pp.split(adata, **kwargs)
    assert_unchanged(adata, before)


def test_sections_need_a_library_key(her2st):
    adata = her2st("C2")
    with pytest.raises(ValueError, match="library_key"):
        stmix.pp.split(adata, test=["C2"])
