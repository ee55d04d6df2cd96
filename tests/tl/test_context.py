"""Context beside the spot in the embedding: wider fields of view and the neighbourhood."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

import stmix
from tests.support import TINY

SMALL = {"backbone": "test_efficientnet", "pretrained": False, "progress": False}


def test_context_columns_are_the_wider_patch_and_the_neighbours_mean(prepared):
    torch.manual_seed(0)  # one random encoder for every call
    stmix.tl.embed(prepared, **SMALL)
    spot = prepared.obsm["stmix_embedding"].copy()
    torch.manual_seed(0)
    stmix.tl.embed(prepared, scales=(1, 3), neighbors=4, **SMALL)
    context = prepared.obsm["stmix_embedding"]
    d = spot.shape[1]
    params = prepared.uns["stmix_embedding"]["params"]
    assert params["parts"] == {"spot": [0, d], "scale_3": [d, 2 * d], "neighbors_4": [2 * d, 3 * d]}
    np.testing.assert_allclose(context[:, :d], spot, rtol=1e-5, atol=1e-6)
    wider = prepared.copy()
    stmix.pp.patches(wider, size=32, spot_scale=3, progress=False)
    torch.manual_seed(0)
    stmix.tl.embed(wider, **SMALL)
    np.testing.assert_allclose(context[:, d : 2 * d], wider.obsm["stmix_embedding"], atol=1e-5)
    coords = prepared.obsm["spatial"]
    _, near = cKDTree(coords).query(coords, k=5)
    np.testing.assert_allclose(context[:, 2 * d :], spot[near[:, 1:]].mean(axis=1), atol=1e-5)


def test_a_head_on_context_predicts_new_spots_with_their_context(prepared):
    """Lite0 (its packaged weights): the model makes the same context again from the image."""
    stmix.tl.embed(prepared, scales=(1, 2), neighbors=3, size=64, progress=False)
    model = stmix.tl.fit(prepared, use_rep="stmix_embedding", head="ridge")
    assert model.config.embedding["scales"] == [1.0, 2.0]
    with_it = stmix.tl.predict(prepared, model, progress=False).X
    fresh = prepared.copy()
    del fresh.obsm["stmix_embedding"], fresh.uns["stmix_embedding"]
    made_again = stmix.tl.predict(fresh, model, progress=False).X  # context made from the image
    np.testing.assert_allclose(made_again, with_it, rtol=1e-4, atol=1e-5)


def test_embed_normalises_the_stain_of_a_copy_and_new_spots_get_the_same(prepared):
    """``stain="macenko"``: the patches encoded are normalised, those in obsm stay as they were."""
    patches = prepared.obsm["stmix_patches"].copy()
    torch.manual_seed(0)
    stmix.tl.embed(prepared, stain="macenko", scales=(1, 2), **SMALL)
    np.testing.assert_array_equal(prepared.obsm["stmix_patches"], patches)
    stain = prepared.uns["stmix_embedding"]["params"]["stain"]
    train = (prepared.obs["stmix_split"] == "train").to_numpy()
    assert stain == {"method": "macenko", "target": stmix.pp._macenko.colours(patches[train])}
    normalised = stmix.pp.normalize_stain(prepared, method="macenko", copy=True)
    torch.manual_seed(0)
    stmix.tl.embed(normalised, scales=(1, 2), **SMALL)
    np.testing.assert_allclose(
        prepared.obsm["stmix_embedding"], normalised.obsm["stmix_embedding"], atol=1e-5
    )
    model = stmix.tl.fit(prepared, use_rep="stmix_embedding", head="ridge")
    assert model.config.embedding["stain"] == stain
    with_it = stmix.tl.predict(prepared, model, progress=False).X
    fresh = prepared.copy()
    del fresh.obsm["stmix_embedding"], fresh.uns["stmix_embedding"]
    fresh.obs["stmix_split"] = "test"  # new spots: the recorded reference, not their own
    torch.manual_seed(0)  # the same random encoder (not pretrained) is made again
    made_again = stmix.tl.predict(fresh, model, progress=False).X
    np.testing.assert_allclose(made_again, with_it, rtol=1e-4, atol=1e-4)


def test_bad_context_is_refused(prepared):
    with pytest.raises(ValueError, match="must start with 1"):
        stmix.tl.embed(prepared, scales=(3,), **SMALL)
    with pytest.raises(ValueError, match="lists a scale twice"):
        stmix.tl.embed(prepared, scales=(1, 1), **SMALL)
    with pytest.raises(ValueError, match="`stain` must be one of"):
        stmix.tl.embed(prepared, stain="vahadane", **SMALL)
    assert "stmix_embedding" not in prepared.obsm
    assert TINY["backbone"] == SMALL["backbone"]
