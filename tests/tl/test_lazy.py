"""embed, impute and fit on patches read from a store, in chunks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

import stmix
from stmix.tl._baseline import training_mean
from tests.conftest import LEARN, TINY


def test_lazy_and_in_memory_patches_predict_the_same(prepared, tmp_path):
    """Real C2 patches: the model, the embedding and the predictions are identical."""
    model = stmix.tl.fit(prepared, augment="none", **TINY)
    stmix.tl.impute(prepared, model, progress=False)
    torch.manual_seed(0)
    stmix.tl.embed(
        prepared, backbone="test_efficientnet", pretrained=False, size=32, progress=False
    )
    lazy = prepared.copy()
    stmix.pp.patches(lazy, size=32, store=tmp_path / "c2.zarr", progress=False)
    stmix.tl.impute(lazy, model, batch_size=16, progress=False)  # 12 batches read by workers
    pd.testing.assert_frame_equal(lazy.obsm["stmix"], prepared.obsm["stmix"])
    torch.manual_seed(0)
    stmix.tl.embed(
        lazy, backbone="test_efficientnet", pretrained=False, size=32, batch_size=16, progress=False
    )
    np.testing.assert_array_equal(lazy.obsm["stmix_embedding"], prepared.obsm["stmix_embedding"])


def test_training_streams_from_a_store_and_learns(synthetic, tmp_path):
    stmix.pp.patches(synthetic, size=16, store=tmp_path / "s.zarr", progress=False)
    mean = training_mean(synthetic, split="val")["mse"]
    stmix.tl.fit(synthetic, augment="snr", **LEARN, workers=2)
    history = synthetic.uns["stmix"]["history"]
    assert history["val_mse"].min() < 0.25 * mean  # measured: 0.02; the mean: 0.22


def test_draws_do_not_depend_on_the_number_of_workers(synthetic, tmp_path):
    stmix.pp.patches(synthetic, size=16, store=tmp_path / "s.zarr", progress=False)
    settings = {**LEARN, "epochs": 2, "plan_kwargs": {"dropout": 0.0}}
    stmix.tl.fit(synthetic, augment="snr", **settings, workers=0)
    none = synthetic.uns["stmix"]["history"]["train_total"]
    stmix.tl.fit(synthetic, augment="snr", **settings, workers=2)
    two = synthetic.uns["stmix"]["history"]["train_total"]
    np.testing.assert_allclose(none, two, rtol=1e-5)
