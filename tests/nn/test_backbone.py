from __future__ import annotations

import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from stmix.nn import backbone as backbone_module
from stmix.nn.backbone import create_backbone
from stmix.nn.model import ExpressionPredictor


def test_forced_offline_fails_fast_and_names_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbone_module, "_cached_file", lambda cfg: None)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"`weights=`.*pretrained=False"):
        create_backbone("resnet18", pretrained=True)
    assert time.perf_counter() - start < 5


def test_weights_from_the_local_cache_load_without_network(monkeypatch, tmp_path):
    saved = timm.create_model("resnet18")
    save_file(saved.state_dict(), str(tmp_path / "model.safetensors"))
    monkeypatch.setattr(backbone_module, "_cached_file", lambda cfg: tmp_path / "model.safetensors")
    monkeypatch.setattr(backbone_module, "_reachable", lambda host: pytest.fail("no probe"))
    model, source = create_backbone("resnet18", pretrained=True)
    assert source == "cached model.safetensors"
    torch.testing.assert_close(model.conv1.weight, saved.conv1.weight)


def test_unknown_backbone_suggests_names():
    with pytest.raises(ValueError, match=r"no backbone named 'resnet_9000'.*resnet"):
        create_backbone("resnet_9000")


def test_fixed_size_backbones_are_built_for_the_patch_size():
    model = ExpressionPredictor(7, "test_vit", img_size=64)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 7)


def test_model_normalises_with_the_backbone_statistics():
    model = ExpressionPredictor(3, "test_efficientnet").eval()
    cfg = model.backbone.pretrained_cfg
    torch.testing.assert_close(model.mean.flatten(), torch.tensor(cfg["mean"]))
    x = torch.rand(2, 3, 32, 32)
    normalised = (x - model.mean) / model.std
    expected = model.head(model.backbone(normalised)) + model.offset
    torch.testing.assert_close(model(x), expected)
    with pytest.raises(ValueError, match="offset"):
        ExpressionPredictor(3, "test_efficientnet", offset=torch.zeros(4))
