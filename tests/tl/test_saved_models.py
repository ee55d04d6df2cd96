"""Models saved by stmix 0.1.0 (before the typed config) load and predict as they did.

``tests/data/models`` holds an image model (timm's ``test_efficientnet``, 16 px patches) and a
ridge head, both saved by the code of 0.1.0, and their predictions on fixed inputs then.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import stmix
from stmix._model_config import SCHEMA, ModelConfig
from tests.support import REPO

MODELS = REPO / "tests" / "data" / "models"


@pytest.mark.parametrize("name", ["image", "ridge"])
def test_a_model_saved_by_0_1_0_loads_and_predicts_the_same(name):
    model = stmix.tl.load(MODELS / f"{name}_0.1.0", device="cpu")
    expected = np.load(MODELS / "expected.npz")
    assert isinstance(model.config, ModelConfig)
    assert model.config.schema == SCHEMA
    # the same within float32 rounding: the thread count changes how convolutions sum
    np.testing.assert_allclose(model.predict(expected[f"{name}_inputs"]), expected[name], rtol=1e-5)
    saved = json.loads((MODELS / f"{name}_0.1.0" / "config.json").read_text())["config"]
    for key, value in saved.items():  # every saved setting reads back under its name
        assert model.config[key] == value, key
        assert getattr(model.config, key) == value, key


def test_a_loaded_old_model_saves_with_the_schema_and_loads_again(tmp_path):
    model = stmix.tl.load(MODELS / "image_0.1.0", device="cpu")
    model.save(tmp_path / "again")
    written = json.loads((tmp_path / "again" / "config.json").read_text())["config"]
    assert written["schema"] == SCHEMA
    again = stmix.tl.load(tmp_path / "again", device="cpu")
    assert again.config == model.config
    expected = np.load(MODELS / "expected.npz")
    np.testing.assert_allclose(
        again.predict(expected["image_inputs"]), expected["image"], rtol=1e-5
    )


def test_a_config_of_a_newer_schema_is_refused_with_what_to_do(tmp_path):
    folder = tmp_path / "future"
    folder.mkdir()
    for file in ("config.json", "model.safetensors"):
        (folder / file).write_bytes((MODELS / "ridge_0.1.0" / file).read_bytes())
    record = json.loads((folder / "config.json").read_text())
    record["config"]["schema"] = SCHEMA + 1
    (folder / "config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=rf"schema {SCHEMA + 1}.*update stmix"):
        stmix.tl.load(folder, device="cpu")
