"""Stain normalisation of patches (Reinhard, Macenko): a re-stained section comes back."""

from __future__ import annotations

import numpy as np
import pytest

import stmix
from stmix.errors import InputTypeError, MissingKeyError
from tests.artefacts import artefacts
from tests.support import TINY, assert_unchanged, snapshot


def _mad(a, b) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def test_a_restained_section_comes_back_to_the_reference(her2st):
    c2 = her2st("C2")
    stmix.pp.patches(c2, size=32, progress=False)
    original = c2.obsm["stmix_patches"].copy()
    reference = stmix.pp._stain.colours(original)
    shifted = c2.copy()
    shifted.obsm["stmix_patches"] = artefacts(original)["stain"]  # another lab's stain
    before = _mad(shifted.obsm["stmix_patches"], original)
    stmix.pp.normalize_stain(shifted, target=reference)
    after = _mad(shifted.obsm["stmix_patches"], original)
    assert after < before / 2, (before, after)
    stain = shifted.uns["stmix_patches"]["params"]["stain"]
    assert stain["method"] == "reinhard" and stain["target"] == reference
    moved = stmix.pp._stain.colours(shifted.obsm["stmix_patches"])
    np.testing.assert_allclose(moved["mean"], reference["mean"], atol=1.5)  # L*a*b* units
    with pytest.raises(ValueError, match="normalised already"):
        stmix.pp.normalize_stain(shifted, target=reference)


def test_macenko_finds_haematoxylin_and_eosin_and_brings_a_restained_section_back(her2st):
    c2 = her2st("C2")
    stmix.pp.patches(c2, size=32, progress=False)
    original = c2.obsm["stmix_patches"].copy()
    reference = stmix.pp._macenko.colours(original)
    h, e = np.asarray(reference["stains"])
    assert h[0] > e[0] and e[1] > h[1], reference  # H absorbs red light most, eosin green
    shifted = c2.copy()
    shifted.obsm["stmix_patches"] = artefacts(original)["stain"]
    moved = stmix.pp._macenko.colours(shifted.obsm["stmix_patches"])
    stmix.pp.normalize_stain(shifted, target=reference, method="macenko")
    stain = shifted.uns["stmix_patches"]["params"]["stain"]
    assert stain["method"] == "macenko" and stain["target"] == reference
    back = stmix.pp._macenko.colours(shifted.obsm["stmix_patches"])

    def angle(a, b):  # degrees between the stain vectors, H and E
        cos = np.sum(np.asarray(a) * np.asarray(b), axis=1)
        return np.degrees(np.arccos(np.clip(cos, -1, 1)))

    assert (
        angle(back["stains"], reference["stains"]) < angle(moved["stains"], reference["stains"])
    ).all()
    assert (angle(back["stains"], reference["stains"]) < 3).all()
    np.testing.assert_allclose(back["max"], reference["max"], rtol=0.1)
    with pytest.raises(ValueError, match="Macenko `target` must be"):
        stmix.pp.normalize_stain(c2, target={"mean": [1, 2, 3], "std": [1, 1, 1]}, method="macenko")
    with pytest.raises(ValueError, match="no stained tissue"):
        stmix.pp._macenko.colours(np.full((2, 8, 8, 3), 250, dtype=np.uint8))


def test_the_training_spots_are_the_default_reference_and_the_model_keeps_it(prepared):
    train = (prepared.obs["stmix_split"] == "train").to_numpy()
    expected = stmix.pp._stain.colours(prepared.obsm["stmix_patches"][train])
    stmix.pp.normalize_stain(prepared)
    assert prepared.uns["stmix_patches"]["params"]["stain"]["target"] == expected
    model = stmix.tl.fit(prepared, augment="none", **TINY)
    assert model.config.stain == {"method": "reinhard", "target": expected}
    other = prepared.copy()
    stmix.pp.patches(other, size=32, progress=False)  # cut again, not normalised
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("stmix.tl._impute").addHandler(handler)
    try:
        stmix.tl.impute(other, model, progress=False)
    finally:
        logging.getLogger("stmix.tl._impute").removeHandler(handler)
    assert any("stain-normalised patches and these are not" in r.getMessage() for r in records)


def test_what_cannot_be_normalised_says_so_and_writes_nothing(prepared, tmp_path):
    before = snapshot(prepared)
    with pytest.raises(ValueError, match=r"`target` must be \{'mean'"):
        stmix.pp.normalize_stain(prepared, target={"mean": [1, 2], "std": [1, 1, 1]})
    with pytest.raises(ValueError, match="`method` must be one of"):
        stmix.pp.normalize_stain(prepared, method="vahadane")
    with pytest.raises(MissingKeyError, match="obsm\\['nope'\\] is missing"):
        stmix.pp.normalize_stain(prepared, patches_key="nope")
    assert_unchanged(prepared, before)
    stored = prepared.copy()
    stmix.pp.patches(stored, size=16, store=tmp_path / "p.zarr", progress=False)
    with pytest.raises(InputTypeError, match="read from a store"):
        stmix.pp.normalize_stain(stored)
    with pytest.raises(ValueError, match=r"re-colours training images.*embedding"):
        prepared.obsm["emb"] = np.zeros((prepared.n_obs, 4), dtype=np.float32)
        stmix.tl.fit(prepared, use_rep="emb", plan_kwargs={"stain": 0.05})


def test_training_with_stain_jitter_records_it(prepared):
    model = stmix.tl.fit(prepared, augment="snr", plan_kwargs={"stain": 0.05}, **TINY)
    assert prepared.uns["stmix"]["params"]["stain"] == 0.05
    assert np.isfinite(model.predict(prepared.obsm["stmix_patches"])).all()
