from __future__ import annotations

import json

import numpy as np
import pytest

import stmix
from tests.conftest import TINY


@pytest.fixture
def trained(prepared):
    return stmix.tl.fit(prepared, augment="snr", plan_kwargs={"target": "delta"}, **TINY), prepared


def test_save_load_round_trip(trained, tmp_path):
    model, adata = trained
    path = model.save(tmp_path / "model")
    assert {p.name for p in path.iterdir()} == {"model.safetensors", "config.json"}
    config = json.loads((path / "config.json").read_text())["config"]
    assert config["genes"] == list(adata.var_names) and config["patch_size"] == 32
    loaded = stmix.tl.load(path)
    patches = adata.obsm["stmix_patches"]
    np.testing.assert_array_equal(loaded.predict(patches), model.predict(patches))
    assert loaded.genes == model.genes and loaded.history == model.history
    assert loaded.config["best_epoch"] == model.config["best_epoch"]
    assert "test_efficientnet" in repr(loaded) and "24 genes" in repr(loaded)


def test_save_refuses_to_overwrite(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)


def test_load_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved stmix model"):
        stmix.tl.load(tmp_path)


def test_predict_checks_the_patch_shape(trained):
    model, adata = trained
    with pytest.raises(ValueError, match=r"size=32"):
        model.predict(np.zeros((2, 48, 48, 3), np.uint8))
    out = model.predict(adata.obsm["stmix_patches"][:3], batch_size=2)
    assert out.shape == (3, 24) and out.dtype == np.float32
