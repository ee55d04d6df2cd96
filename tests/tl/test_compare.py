from __future__ import annotations

import numpy as np
import pytest

import stmix
from tests.support import TINY, assert_unchanged, snapshot


def test_every_method_on_the_same_splits(prepared):
    before = snapshot(prepared)
    kwargs = {k: v for k, v in TINY.items() if k != "progress"}
    table = stmix.tl.compare(prepared, ["mean", "none", "knn", "snr"], seeds=[0, 3], **kwargs)
    assert_unchanged(prepared, before)  # each run works on a copy
    assert list(table["method"]) == ["mean", "none", "knn", "snr"] * 2
    assert list(table["seed"]) == [0] * 4 + [3] * 4
    assert table[["mse", "mae"]].notna().all().all()
    # the mean row is the training mean scored on that seed's test spots
    run = stmix.pp.split(prepared, seed=3, copy=True)
    labels = run.obs["stmix_split"].to_numpy()
    mean = prepared.X[labels == "train"].mean(axis=0)
    mse = ((prepared.X[labels == "test"] - mean) ** 2).mean()
    assert table.iloc[4]["mse"] == pytest.approx(mse, rel=1e-5)
    # a fit row is what fit + impute + evaluate give on that split
    stmix.pp.neighbors(run, 10)
    model = stmix.tl.fit(run, augment="snr", seed=3, **TINY)
    stmix.tl.impute(run, model, progress=False)
    stmix.tl.evaluate(run)
    assert table.iloc[7]["mse"] == pytest.approx(run.uns["stmix_metrics"]["mse"], rel=1e-6)


def test_variants_and_bad_methods(prepared):
    kwargs = {k: v for k, v in TINY.items() if k != "progress"}
    table = stmix.tl.compare(
        prepared,
        {"snr-expression": {"augment": "snr", "neighbors": {"basis": "expression"}}},
        **kwargs,
    )
    assert table["method"].tolist() == ["snr-expression"] and np.isfinite(table["mse"]).all()
    with pytest.raises(ValueError, match="augment"):
        stmix.tl.compare(prepared, ["manifold"], **kwargs)
    with pytest.raises(ValueError, match="seeds="):
        stmix.tl.compare(prepared, ["none"], seed=1, **kwargs)


def test_no_seeds_is_an_error(prepared):
    with pytest.raises(ValueError, match="`seeds` is empty"):
        stmix.tl.compare(prepared, ["none"], seeds=[], **TINY)
