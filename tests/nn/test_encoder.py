"""The encoder: the backbone's own normalisation, its input size, resizing and dihedral views."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stmix.nn import encoder as encoder_module
from stmix.nn.encoder import DIHEDRAL, Encoder
from tests.support import CFG, Pixels


@pytest.fixture
def created(monkeypatch):
    """Encoders built on :class:`Pixels`; the arguments create_backbone got are recorded."""
    calls = []

    def create(name, **kwargs):
        calls.append((name, kwargs))
        cfg = kwargs["backbone_kwargs"]  # stands in for the configuration here
        return Pixels(dict(CFG) if cfg is None else cfg), "fake weights"

    monkeypatch.setattr(encoder_module, "create_backbone", create)
    return calls


def test_every_argument_reaches_the_backbone(created):
    encoder = Encoder("some_net", pretrained=True, weights="w.safetensors", img_size=6)
    assert created == [
        (
            "some_net",
            {
                "pretrained": True,
                "weights": "w.safetensors",
                "img_size": 6,
                "backbone_kwargs": None,
            },
        )
    ]
    assert encoder.weights_source == "fake weights" and encoder.num_features == 48
    Encoder()
    assert created[-1][0] == "tf_efficientnet_lite0" and created[-1][1]["pretrained"] is False


def test_images_are_normalised_with_the_backbones_mean_and_std(created):
    encoder = Encoder("some_net")
    torch.manual_seed(0)
    x = torch.rand(2, 3, 4, 4)
    mean = torch.tensor(CFG["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(CFG["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(encoder(x), ((x - mean) / std).flatten(1))
    assert encoder(x.double()).dtype == torch.float64  # the buffers follow the input's dtype
    assert encoder(x.bfloat16()).dtype == torch.bfloat16  # not promoted to float32
    assert encoder.mean.shape == encoder.std.shape == (1, 3, 1, 1)  # as saved models hold them
    assert {name for name, _ in encoder.named_buffers()} == {"mean", "std"}


def test_without_a_configured_mean_and_std_both_are_one_half(created):
    encoder = Encoder("some_net", backbone_kwargs={})  # Pixels gets an empty configuration
    x = torch.rand(1, 3, 2, 2)
    torch.testing.assert_close(encoder(x), ((x - 0.5) / 0.5).flatten(1))
    assert encoder.input_size is None


def test_the_input_size_is_the_configured_side(created):
    assert Encoder("some_net").input_size == 6
    rectangular = Encoder("some_net", backbone_kwargs={"input_size": (3, 5, 7)})
    assert rectangular.input_size == 7
    none = Encoder("some_net", backbone_kwargs={"mean": (0.5,) * 3})
    none.backbone.pretrained_cfg = None
    assert none.input_size is None


def test_the_eight_views_are_the_dihedral_group():
    assert DIHEDRAL[0] == (0, False) and len(set(DIHEDRAL)) == 8
    assert DIHEDRAL[:4] == ((0, False), (1, False), (2, False), (3, False))
    x = torch.arange(9.0).view(1, 1, 3, 3)
    views = {
        tuple(torch.rot90(torch.flip(x, (-1,)) if flip else x, k, (-2, -1)).flatten().tolist())
        for k, flip in DIHEDRAL
    }
    assert len(views) == 8


def test_embed_resizes_and_averages_views(created):
    encoder = Encoder("some_net")
    torch.manual_seed(0)
    x = torch.rand(2, 3, 6, 6)
    torch.testing.assert_close(encoder.embed(x), encoder(x))
    torch.testing.assert_close(encoder.embed(x, size=6), encoder(x))  # already that size
    wide = torch.rand(1, 3, 6, 3)  # not square: resized to size × size all the same
    resized = F.interpolate(wide, size=(6, 6), mode="bilinear", antialias=True)
    torch.testing.assert_close(encoder.embed(wide, size=6), encoder(resized))
    small = F.interpolate(x, size=(3, 3), mode="bilinear", antialias=True)
    torch.testing.assert_close(encoder.embed(x, size=3), encoder(small))
    two = (encoder(x) + encoder(torch.rot90(x, 1, (-2, -1)))) / 2
    torch.testing.assert_close(encoder.embed(x, tta=2), two)
    flipped = encoder(torch.rot90(torch.flip(x, (-1,)), 3, (-2, -1)))
    torch.testing.assert_close(
        encoder.embed(x, tta=8) * 8 - encoder.embed(x, tta=7) * 7, flipped, atol=1e-5, rtol=1e-5
    )
    # the mean over all eight views does not depend on the patch's orientation
    turned = torch.flip(torch.rot90(x, 1, (-2, -1)), (-2,))
    torch.testing.assert_close(encoder.embed(turned, tta=8), encoder.embed(x, tta=8))
