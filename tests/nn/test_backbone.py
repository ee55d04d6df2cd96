from __future__ import annotations

import contextlib
import dataclasses
import re
import socket
import time
from types import SimpleNamespace

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


def test_weights_the_pretrained_cfg_names_as_a_file_load_from_it(monkeypatch, tmp_path):
    saved = timm.create_model("resnet18")
    path = tmp_path / "w.safetensors"
    save_file(saved.state_dict(), str(path))
    cfg = dataclasses.replace(timm.models.get_pretrained_cfg("resnet18"), file=str(path))
    monkeypatch.setattr(timm.models, "get_pretrained_cfg", lambda name: cfg)
    monkeypatch.setattr(backbone_module, "_reachable", lambda host: pytest.fail("no probe"))
    model, source = create_backbone("resnet18", pretrained=True)
    assert source == "cached w.safetensors"
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


@pytest.fixture
def probe(monkeypatch):
    """Weights not cached, network calls recorded; ``probe.accept`` says whether they connect."""
    probe = SimpleNamespace(calls=[], accept=False)

    def create_connection(address, timeout=None):
        probe.calls.append((address, timeout))
        if not probe.accept:
            raise OSError("connection refused")
        return contextlib.nullcontext()

    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(backbone_module, "_cached_file", lambda cfg: None)
    # a download would be timm's: record it instead of reaching the network
    monkeypatch.setattr(backbone_module, "_create", lambda name, **kw: ("built", kw))
    return probe


def test_the_weights_host_is_probed_once_on_443_with_the_timeout(probe):
    with pytest.raises(RuntimeError, match=r"huggingface\.co cannot be reached"):
        create_backbone("resnet18", pretrained=True)
    assert probe.calls == [(("huggingface.co", 443), backbone_module.PROBE_TIMEOUT)]
    with pytest.raises(RuntimeError, match="not in the local hub cache"):
        create_backbone("hf-hub:org/not-cached", pretrained=True)
    assert probe.calls[1] == (("huggingface.co", 443), backbone_module.PROBE_TIMEOUT)
    probe.accept = True
    model, source = create_backbone("resnet18", pretrained=True)
    assert source == "huggingface.co download"
    assert model[1]["pretrained"] is True


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [("https://hub.example.org", "hub.example.org"), ("not a url", "huggingface.co")],
)
def test_the_probe_follows_hf_endpoint(probe, monkeypatch, endpoint, host):
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(RuntimeError, match=rf"{re.escape(host)} cannot be reached"):
        create_backbone("resnet18", pretrained=True)
    with pytest.raises(RuntimeError, match="not in the local hub cache"):
        create_backbone("hf-hub:org/not-cached", pretrained=True)
    assert [address for address, _ in probe.calls] == [(host, 443)] * 2


@pytest.mark.parametrize(
    ("url", "host"),
    [("https://download.example.org/w.pth", "download.example.org"), ("w.pth", "w.pth")],
)
def test_weights_by_url_probe_their_own_host(probe, monkeypatch, url, host):
    cfg = SimpleNamespace(hf_hub_id=None, url=url, file=None)
    monkeypatch.setattr(timm.models, "get_pretrained_cfg", lambda name: cfg)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org")  # not used for a URL
    with pytest.raises(RuntimeError, match=rf"{re.escape(host)} cannot be reached"):
        create_backbone("resnet18", pretrained=True)
    assert probe.calls == [((host, 443), backbone_module.PROBE_TIMEOUT)]


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "Yes"])
def test_hf_hub_offline_skips_the_probe(probe, monkeypatch, value):
    probe.accept = True  # the network is there, but the user said offline
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    with pytest.raises(RuntimeError, match="cannot be reached"):
        create_backbone("resnet18", pretrained=True)
    assert probe.calls == []


def test_hf_hub_offline_zero_is_online(probe, monkeypatch):
    probe.accept = True
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert create_backbone("resnet18", pretrained=True)[1] == "huggingface.co download"
    assert len(probe.calls) == 1


@pytest.mark.parametrize(
    "filename", ["open_clip_model.safetensors", "model.safetensors", "pytorch_model.bin"]
)
def test_weights_in_the_hub_cache_are_found(monkeypatch, tmp_path, filename):
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--stmix-test--tiny"
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "snapshots" / revision / filename).write_bytes(b"weights")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    cfg = dataclasses.replace(
        timm.models.get_pretrained_cfg("resnet18"), hf_hub_id="stmix-test/tiny@main", file=None
    )
    assert backbone_module._cached_file(cfg) == repo / "snapshots" / revision / filename
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert backbone_module._cached_file(cfg) is None


def test_weights_torch_hub_downloaded_are_found(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = dataclasses.replace(
        timm.models.get_pretrained_cfg("resnet18"),
        hf_hub_id=None,
        file=None,
        url="https://example.org/weights/resnet18-x.pth?download=1",
    )
    assert backbone_module._cached_file(cfg) is None
    local = tmp_path / "hub" / "checkpoints" / "resnet18-x.pth"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"weights")
    assert backbone_module._cached_file(cfg) == local
