from __future__ import annotations

import json
import os

import numpy as np
import pytest

import stmix
from tests.support import TINY


@pytest.fixture
def trained(prepared):
    return stmix.tl.fit(prepared, augment="snr", plan_kwargs={"target": "delta"}, **TINY), prepared


def test_save_load_round_trip(trained, tmp_path):
    model, adata = trained
    path = model.save(tmp_path / "model")
    names = {"model.safetensors", "config.json", "calibration.safetensors"}
    assert {p.name for p in path.iterdir()} == names  # the spread's calibration beside them
    umask = os.umask(0)
    os.umask(umask)
    for file in path.iterdir():  # a colleague may read both files (safetensors makes 0600)
        assert file.stat().st_mode & 0o777 == 0o666 & ~umask
    config = json.loads((path / "config.json").read_text())["config"]
    assert config["genes"] == list(adata.var_names) and config["patch_size"] == 32
    loaded = stmix.tl.load(path)
    patches = adata.obsm["stmix_patches"]
    np.testing.assert_array_equal(loaded.predict(patches), model.predict(patches))
    assert loaded.genes == model.genes and loaded.history == model.history
    assert loaded.config["best_epoch"] == model.config["best_epoch"]
    assert loaded.config.uncertainty == {
        "method": "dropout",
        "n_val": 37,
        "flag_encoder": "tf_efficientnet_lite0",
    }
    np.testing.assert_allclose(loaded.calibration.scores, model.calibration.scores, rtol=1e-6)
    assert "test_efficientnet" in repr(loaded) and "24 genes" in repr(loaded)


def test_save_refuses_to_overwrite(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)


def test_a_full_disk_keeps_the_model_that_was_there(trained, tmp_path):
    """The weights' write fails half-way (a file-size limit, as a full disk does)."""
    import resource

    model, _ = trained
    path = model.save(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    config_size = len(before["config.json"])
    assert len(before["model.safetensors"]) > config_size + 4096  # the weights outgrow the limit
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (config_size + 4096, hard))
    try:
        with pytest.raises(OSError, match=r"Could not write the model into .*\(File too large\)"):
            model.save(path, overwrite=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left


def test_load_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved stmix model"):
        stmix.tl.load(tmp_path)


def test_predict_checks_the_patch_shape(trained):
    model, adata = trained
    with pytest.raises(ValueError, match=r"size=32"):
        model.predict(np.zeros((2, 48, 48, 3), np.uint8))
    out = model.predict(adata.obsm["stmix_patches"][:3], batch_size=2)
    assert out.shape == (3, 24) and out.dtype == np.float32


def test_save_never_replaces_what_stmix_did_not_write(trained, tmp_path):
    model, _ = trained
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"learning_rate": 0.1}')  # a user's own config
    with pytest.raises(FileExistsError, match=r"config.json \(not an stmix model's\)"):
        model.save(folder, overwrite=True)
    assert (folder / "config.json").read_text() == '{"learning_rate": 0.1}'
    (folder / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        model.save(folder, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        model.save(tmp_path / "file")


@pytest.fixture
def saved(trained, tmp_path):
    model, adata = trained
    return model.save(tmp_path / "m"), adata


def _edit(path, change):
    record = json.loads((path / "config.json").read_text())
    change(record["config"])
    (path / "config.json").write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: c.update(patch_size=-3), "patch_size.*8 to 4096"),
        (lambda c: c.update(patch_size=10**9), "patch_size.*8 to 4096"),
        (lambda c: c.update(patch_size="32"), "patch_size.*8 to 4096"),
        (lambda c: c.update(genes=[*c["genes"][:-1], c["genes"][0]]), "genes more than once"),
        (lambda c: c.pop("genes"), "lacks 'genes'.*incomplete"),
        (lambda c: c.update(backbone=""), "backbone"),
        (lambda c: c.update(kind="forest"), "kind"),
        (lambda c: c.update(dropout=1.5), "dropout"),
        (lambda c: c.update(backbone_kwargs=["drop_rate", 0.1]), "'backbone_kwargs' must be an"),
        (lambda c: c.update(spot_scale="1.5"), "'spot_scale' must be a number above 0"),
        (lambda c: c.update(spot_scale=0), "'spot_scale' must be a number above 0"),
        (lambda c: c.update(spot_diameter_px=float("nan")), "'spot_diameter_px' must be"),
        (lambda c: c.update(target=3), "'target' must be"),
        (lambda c: c.update(genes=c["genes"][:10]), r"does not fit config.json \(10 genes"),
    ],
)
def test_load_checks_the_config(saved, change, match):
    path, _ = saved
    _edit(path, change)
    with pytest.raises(ValueError, match=match):
        stmix.tl.load(path)


def test_load_damaged_files(saved):
    path, _ = saved
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"model.safetensors cannot be read.*damaged"):
        stmix.tl.load(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        stmix.tl.load(path)


def test_a_newer_model_warns(saved):
    path, adata = saved
    _edit(path, lambda c: c.update(stmix_version="99.0"))
    with pytest.warns(UserWarning, match="saved by stmix 99.0, newer than the installed"):
        model = stmix.tl.load(path)
    assert model.predict(adata.obsm["stmix_patches"][:2]).shape == (2, 24)
