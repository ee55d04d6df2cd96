"""nn/model.py, the image-to-expression network: features, dropout, a linear head, an offset."""

from __future__ import annotations

import pytest
import torch

from stmix.nn import encoder as encoder_module
from stmix.nn.model import ExpressionPredictor
from tests.support import CFG, Pixels


@pytest.fixture
def created(monkeypatch):
    calls = []

    def create(name, **kwargs):
        calls.append((name, kwargs))
        return Pixels(dict(CFG)), "fake weights"

    monkeypatch.setattr(encoder_module, "create_backbone", create)
    return calls


def test_the_output_is_the_head_of_the_features_plus_the_offset(created):
    offset = torch.tensor([1.0, -2.0])
    model = ExpressionPredictor(2, "some_net", offset=offset).eval()
    assert (model.head.in_features, model.head.out_features) == (48, 2)
    torch.manual_seed(0)
    torch.nn.init.normal_(model.head.weight)
    x = torch.rand(3, 3, 4, 4)
    mean = torch.tensor(CFG["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(CFG["std"]).view(1, 3, 1, 1)
    expected = model.head(((x - mean) / std).flatten(1)) + offset
    torch.testing.assert_close(model(x), expected)


def test_dropout_acts_on_the_features_in_training(created):
    model = ExpressionPredictor(1, "some_net", dropout=0.5)
    assert model.dropout.p == 0.5 and ExpressionPredictor(1, "some_net").dropout.p == 0.2
    with torch.no_grad():
        model.head.weight.fill_(1.0)
        model.head.bias.zero_()
    x = torch.full((200, 3, 4, 4), 0.6)
    torch.manual_seed(0)
    train = model.train()(x)
    assert len(set(train.squeeze(1).tolist())) > 5
    torch.testing.assert_close(model.eval()(x), model(x[:1]).expand(200, 1))  # no dropout


def test_the_offset_defaults_to_zeros_is_checked_and_copied(created):
    assert ExpressionPredictor(3, "some_net").offset.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"offset must have shape \(3,\), not \(2,\)"):
        ExpressionPredictor(3, "some_net", offset=torch.zeros(2))
    offset = torch.tensor([1.0, 2.0, 3.0])
    model = ExpressionPredictor(3, "some_net", offset=offset.double())
    assert model.offset.dtype == torch.float32
    same = torch.tensor([1.0, 2.0, 3.0])
    kept = ExpressionPredictor(3, "some_net", offset=same)
    same[0] = 9.0
    assert kept.offset.tolist() == [1.0, 2.0, 3.0]
    assert "offset" in dict(kept.named_buffers())


def test_every_argument_reaches_the_encoder(created):
    ExpressionPredictor(2, "some_net", pretrained=True, weights="w.pt", img_size=6)
    ExpressionPredictor(2, backbone_kwargs={"drop_rate": 0.1})
    assert created == [
        (
            "some_net",
            {"pretrained": True, "weights": "w.pt", "img_size": 6, "backbone_kwargs": None},
        ),
        (
            "tf_efficientnet_lite0",
            {
                "pretrained": False,
                "weights": None,
                "img_size": None,
                "backbone_kwargs": {"drop_rate": 0.1},
            },
        ),
    ]


def test_features_and_head_compose_as_timm_and_embed_gives_features(created):
    model = ExpressionPredictor(2, "some_net").eval()
    x = torch.rand(3, 3, 4, 4)
    features = model.forward_features(x)
    assert features.shape == (3, model.num_features) == (3, 48)
    torch.testing.assert_close(model.forward_head(features), model(x))
    torch.testing.assert_close(model.forward_head(features, pre_logits=True), features)
    torch.testing.assert_close(model.embed(x), features)  # features, not gene predictions


def test_a_real_timm_predictor_embeds_its_features():
    model = ExpressionPredictor(5, "test_efficientnet", pretrained=False).eval()
    with torch.no_grad():
        assert model.embed(torch.rand(2, 3, 32, 32)).shape == (2, model.num_features)


def test_the_predictor_embeds_as_its_encoder_with_size_and_views():
    model = ExpressionPredictor(5, "test_efficientnet", pretrained=False).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        resized = model.embed(x, size=48, tta=4)
        torch.testing.assert_close(resized, model.encoder.embed(x, size=48, tta=4))
        assert not torch.allclose(resized, model.embed(x))  # size and views reach the encoder
        assert not torch.allclose(model.embed(x, size=48), model.embed(x, size=48, tta=4))
        assert not torch.allclose(model.embed(x, tta=4), model.embed(x, size=48, tta=4))


def test_weights_saved_before_the_encoder_was_composed_load_the_same():
    """State dicts with the encoder's parts on the predictor (``backbone.*``, ``mean``, ``std``)."""
    torch.manual_seed(0)
    saved = ExpressionPredictor(3, "test_efficientnet", pretrained=False).eval()
    old = {k.removeprefix("encoder."): v for k, v in saved.state_dict().items()}
    assert {"mean", "std"} <= set(old) and any(k.startswith("backbone.") for k in old)
    torch.manual_seed(1)
    loaded = ExpressionPredictor(3, "test_efficientnet", pretrained=False).eval()
    loaded.load_state_dict(old)  # strict: every key found its place
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), saved(x))
