"""embed, impute and fit on patches read from a store, in chunks."""

from __future__ import annotations

import numpy as np
import torch

import stmix
from stmix import _store
from stmix.tl._baseline import training_mean
from stmix.tl._batches import Rows
from tests.support import LEARN, TINY


def test_lazy_and_in_memory_patches_predict_the_same(prepared, tmp_path):
    """Real C2 patches: the model, the embedding and the predictions are identical.

    Both read batches of 16: on one thread (a pytest-xdist worker) oneDNN's convolutions may
    round the last bit differently for another batch size, which is not what this compares.
    """
    model = stmix.tl.fit(prepared, augment="none", **TINY)
    stmix.tl.impute(prepared, model, batch_size=16, progress=False)
    torch.manual_seed(0)
    stmix.tl.embed(
        prepared,
        backbone="test_efficientnet",
        pretrained=False,
        size=32,
        batch_size=16,
        progress=False,
    )
    lazy = prepared.copy()
    stmix.pp.patches(lazy, size=32, store=tmp_path / "c2.zarr", progress=False)
    stmix.tl.impute(lazy, model, batch_size=16, progress=False)  # 12 batches read by workers
    np.testing.assert_array_equal(lazy.layers["stmix"], prepared.layers["stmix"])
    torch.manual_seed(0)
    stmix.tl.embed(
        lazy, backbone="test_efficientnet", pretrained=False, size=32, batch_size=16, progress=False
    )
    np.testing.assert_array_equal(lazy.obsm["stmix_embedding"], prepared.obsm["stmix_embedding"])


def test_training_streams_from_a_store_and_learns(synthetic, tmp_path):
    stmix.pp.patches(synthetic, size=16, store=tmp_path / "s.zarr", progress=False)
    mean = training_mean(synthetic, split="val")["mse"]
    stmix.tl.fit(synthetic, augment="snr", **{**LEARN, "epochs": 20}, workers=2)
    history = synthetic.uns["stmix"]["history"]
    assert history["val_mse"].min() < 0.25 * mean  # measured: 0.045; the mean: 0.22


def test_rows_are_read_straight_from_the_store_only_when_it_is_the_same_array(synthetic, tmp_path):
    stmix.pp.patches(synthetic, size=16, store=tmp_path / "s.zarr", progress=False)
    lazy, params = synthetic.obsm["stmix_patches"], synthetic.uns["stmix_patches"]["params"]
    reader = _store.reader(lazy, params)
    assert reader is not None
    for row in (0, 7, synthetic.n_obs - 1):
        np.testing.assert_array_equal(reader[row], np.asarray(lazy[row]))
    subset = synthetic[::-2].copy()  # other spots in another order: the record no longer fits
    assert _store.reader(subset.obsm["stmix_patches"], params) is None
    rows = Rows(subset.obsm["stmix_patches"], np.array([0, 3]))
    np.testing.assert_array_equal(rows.read(1), np.asarray(lazy[synthetic.n_obs - 1 - 6]))


def test_draws_do_not_depend_on_the_number_of_workers(synthetic, tmp_path):
    stmix.pp.patches(synthetic, size=16, store=tmp_path / "s.zarr", progress=False)
    settings = {**LEARN, "epochs": 2, "plan_kwargs": {"dropout": 0.0}}
    stmix.tl.fit(synthetic, augment="snr", **settings, workers=0)
    none = synthetic.uns["stmix"]["history"]["train_total"]
    stmix.tl.fit(synthetic, augment="snr", **settings, workers=2)
    two = synthetic.uns["stmix"]["history"]["train_total"]
    np.testing.assert_allclose(none, two, rtol=1e-5)


def test_reading_keeps_workers_across_epochs_when_there_are_any():
    """Workers start once (persistent) and read dask arrays synchronously; none: no set-up."""
    from types import SimpleNamespace

    from stmix.tl._batches import synchronous_dask
    from stmix.tl._inputs import StoredInputs

    for workers in (1, 4):
        reading = StoredInputs.reading(SimpleNamespace(workers=workers))
        assert reading == {
            "num_workers": workers,
            "worker_init_fn": synchronous_dask,
            "persistent_workers": True,
        }
    reading = StoredInputs.reading(SimpleNamespace(workers=0))
    assert reading == {"num_workers": 0, "worker_init_fn": None, "persistent_workers": False}
    torch.utils.data.DataLoader(range(4), **reading)  # persistent workers need workers
