"""A fine-tuned network with context: ``tl.fit(scales=(1, 3))`` and its predictions on new spots."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import stmix
from tests.support import TINY, assert_unchanged, snapshot


@pytest.fixture(scope="module")
def trained(_prepared_c2):
    adata = _prepared_c2.copy()
    model = stmix.tl.fit(adata, scales=(1, 3), batch_size=8, **TINY)
    return adata, model


def by_hand(adata, scale: float) -> np.ndarray:
    """The spot's patches with patches ``scale`` times wider, cut by the user and stacked."""
    wider = stmix.pp.patches(adata, size=32, spot_scale=scale, copy=True, progress=False)
    return np.concatenate([adata.obsm["stmix_patches"], wider.obsm["stmix_patches"]], axis=-1)


def test_the_network_reads_the_spot_and_a_field_three_times_wider(trained):
    adata, model = trained
    assert model.config.scales == [1.0, 3.0]
    assert model.module.fields == 2 and model.input_shape == (32, 32, 6)
    assert adata.uns["stmix"]["params"]["size"] == 32
    stacked = by_hand(adata, 3)
    expected = model.predict(stacked)
    stmix.tl.impute(adata, model, progress=False)  # cuts the wider fields itself
    np.testing.assert_allclose(adata.layers["stmix"], expected, rtol=1e-5, atol=1e-6)
    other = stacked.copy()
    other[:, :, :, 3:] = other[::-1, :, :, 3:]  # the same spots seen in another's surroundings
    assert np.abs(model.predict(other) - expected).mean() > 1e-4  # the wider field is read
    with pytest.raises(ValueError, match=r"\(n, 32, 32, 6\).*scales \[1.0, 3.0\]"):
        model.predict(adata.obsm["stmix_patches"])


def test_a_saved_context_model_predicts_the_same_with_intervals(trained, tmp_path):
    adata, model = trained
    adata = adata.copy()
    model.save(tmp_path / "model")
    loaded = stmix.tl.load(tmp_path / "model")
    assert loaded.config.scales == [1.0, 3.0] and loaded.module.fields == 2
    stmix.tl.impute(adata, loaded, interval=0.9, progress=False)
    np.testing.assert_allclose(adata.layers["stmix"], model.predict(by_hand(adata, 3)), atol=1e-5)
    assert (adata.layers["stmix_lower"] <= adata.layers["stmix_upper"]).all()
    assert adata.obs["stmix_ood"].between(0, 1).all()


def test_context_on_an_embedding_or_a_bad_scale_is_refused_and_nothing_written(prepared):
    prepared.obsm["features"] = np.random.default_rng(0).normal(size=(prepared.n_obs, 8))
    before = snapshot(prepared)
    with pytest.raises(ValueError, match=r"tl.embed\(adata, scales=\(1.0, 3.0\)\)"):
        stmix.tl.fit(prepared, use_rep="features", scales=(1, 3), progress=False)
    with pytest.raises(ValueError, match="must start with 1"):
        stmix.tl.fit(prepared, scales=(3, 1), **TINY)
    assert_unchanged(prepared, before)


def test_a_slide_gets_the_same_context(trained, c2_slides):
    """``predict_slide`` tiles the slide and cuts every field of view from it, as ``impute``."""
    from stmix.tl import _slides

    _, model = trained
    where = _slides.geometry(model, str(c2_slides["flat"]))
    pred = _slides.predict_slide(str(c2_slides["flat"]), model, where, progress=False)
    grid = stmix.pp.tile(
        str(c2_slides["flat"]),
        spot_diameter=where.spot_diameter,
        spacing=where.spacing,
        mpp=where.mpp,
        grid=where.grid,
        tissue=where.tissue,
    )
    stmix.pp.patches(grid, size=32, progress=False)
    assert grid.n_obs == pred.n_obs > 10
    np.testing.assert_allclose(pred.X, model.predict(by_hand(grid, 3)), rtol=1e-4, atol=1e-5)


def test_the_command_line_trains_with_context_and_imputes_with_it(prepared, tmp_path):
    from stmix.cli import main

    prepared.write_h5ad(tmp_path / "c2.h5ad")
    tiny = ["--backbone", "test_efficientnet", "--no-pretrained", "--epochs", "1", "--quiet"]
    fit = ["fit", str(tmp_path / "c2.h5ad"), "--model", str(tmp_path / "m"), *tiny]
    assert main([*fit, "--scales", "1", "3"]) == 0
    assert stmix.tl.load(tmp_path / "m").config.scales == [1.0, 3.0]
    impute = ["impute", str(tmp_path / "c2.h5ad"), "--model", str(tmp_path / "m"), "--quiet"]
    assert main([*impute, "--out", str(tmp_path / "out.h5ad")]) == 0
    assert np.isfinite(stmix.tl.predictions(ad.read_h5ad(tmp_path / "out.h5ad")).X).all()
