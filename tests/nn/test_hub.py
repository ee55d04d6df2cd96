"""Hub models (``hf-hub:<org>/<name>``) from the local cache, with the network blocked."""

from __future__ import annotations

import json
import re
import socket
import time

import numpy as np
import pytest
import timm
import torch
from timm.models import save_for_hf

import stmix
from stmix.nn import hub
from stmix.nn.backbone import create_backbone

NAME = "hf-hub:stmix-test/tiny-encoder"
MEAN, STD = (0.70, 0.58, 0.70), (0.21, 0.23, 0.18)  # H-optimus-like, not ImageNet's


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a network call was made: {args[:2]}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _cache(tmp_path, model, repo_name: str):
    """Save ``model`` in the hub cache layout under ``tmp_path`` as ``stmix-test/<repo_name>``."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / f"models--stmix-test--{repo_name}"
    snapshot = repo / "snapshots" / revision
    save_for_hf(model, str(snapshot), safe_serialization=True)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture
def cached_model(tmp_path, monkeypatch):
    """A small timm model saved in the hub cache layout, HF_HOME pointing there, offline."""
    torch.manual_seed(7)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=0).eval()
    model.pretrained_cfg = {
        **model.pretrained_cfg,
        "mean": MEAN,
        "std": STD,
        "input_size": (3, 48, 48),
    }
    snapshot = _cache(tmp_path, model, "tiny-encoder")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return model, snapshot


def _direct(model, patches: np.ndarray, size: int) -> np.ndarray:
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model(x).numpy()


def test_embed_uses_the_cached_models_weights_normalisation_and_size(
    prepared, cached_model, no_network
):
    model, snapshot = cached_model
    assert hub.cached_snapshot(NAME) == snapshot
    stmix.tl.embed(prepared, backbone=NAME, progress=False)
    params = prepared.uns["stmix_embedding"]["params"]
    assert params["size"] == 48 and params["weights"] == "hub cache stmix-test/tiny-encoder"
    expected = _direct(model, prepared.obsm["stmix_patches"], 48)
    np.testing.assert_allclose(prepared.obsm["stmix_embedding"], expected, atol=1e-5)


def test_fine_tuning_heads_and_loading_a_hub_backbone(prepared, cached_model, no_network, tmp_path):
    net = stmix.tl.fit(
        prepared, backbone=NAME, backbone_kwargs={"drop_rate": 0.0}, epochs=1, progress=False
    )
    assert net.config["backbone_kwargs"] == {"drop_rate": 0.0}
    assert "hub cache" in net.config["weights_source"]
    net.save(tmp_path / "net")
    loaded = stmix.tl.load(tmp_path / "net")
    patches = prepared.obsm["stmix_patches"]
    np.testing.assert_array_equal(loaded.predict(patches), net.predict(patches))

    stmix.tl.embed(prepared, backbone=NAME, progress=False)
    head = stmix.tl.fit(prepared, use_rep="stmix_embedding", head="ridge", progress=False)
    stmix.tl.impute(prepared, head, progress=False)
    made_here = prepared.copy()
    del made_here.obsm["stmix_embedding"], made_here.layers["stmix"]
    stmix.tl.impute(made_here, head, progress=False)  # the embedding made again, from the cache
    np.testing.assert_allclose(made_here.layers["stmix"], prepared.layers["stmix"], atol=1e-5)


def test_class_arguments_by_import_path(cached_model, no_network):
    kwargs = hub.resolve_kwargs({"act_layer": "torch.nn.SiLU", "init_values": 1e-5})
    assert kwargs["act_layer"] is torch.nn.SiLU and kwargs["init_values"] == 1e-5
    with pytest.raises(ValueError, match="names no importable class"):
        hub.resolve_kwargs({"mlp_layer": "timm.layers.NoSuchLayer"})
    # a class given as a class is recorded by its path (config.json), which resolves back to it
    recorded = hub.record_kwargs(
        {"mlp_layer": timm.layers.SwiGLUPacked, "act_layer": torch.nn.SiLU, "init_values": 1e-5}
    )
    assert recorded == {
        "mlp_layer": "timm.layers.SwiGLUPacked",  # a functools.partial, found by identity
        "act_layer": "torch.nn.modules.activation.SiLU",
        "init_values": 1e-5,
    }
    resolved = hub.resolve_kwargs(recorded)
    assert resolved["mlp_layer"] is timm.layers.SwiGLUPacked
    assert resolved["act_layer"] is torch.nn.SiLU
    with pytest.raises(ValueError, match="by its import path"):
        hub.record_kwargs({"act_layer": lambda x: x})


def test_creation_arguments_the_model_rejects(cached_model, no_network):
    with pytest.raises(ValueError, match=r"tiny-encoder.*does not accept these creation arguments"):
        create_backbone(NAME, pretrained=True, backbone_kwargs={"no_such_argument": 3})


def test_a_truncated_cached_file_is_named(cached_model, no_network):
    _, snapshot = cached_model
    weights = snapshot / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    with pytest.raises(
        ValueError,
        match=rf"cached weights of 'hf-hub:stmix-test/tiny-encoder' in {re.escape(str(snapshot))} "
        r"cannot be read.*cut short",
    ):
        create_backbone(NAME, pretrained=True)


def test_not_cached_and_offline_fails_fast(cached_model, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://unreachable.invalid")
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"not in the local hub cache.*`weights=`"):
        create_backbone("hf-hub:stmix-test/not-downloaded", pretrained=True)
    assert time.perf_counter() - start < 15
    with pytest.raises(ValueError, match="not a hub name"):
        create_backbone("hf-hub:no-slash", pretrained=True)


def test_gated_and_unknown_models_in_words(cached_model, monkeypatch):
    from types import SimpleNamespace

    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    response = SimpleNamespace(headers={}, request=None, status_code=401)  # what they read

    def raising(error):
        def config(name, snapshot):
            raise error("401 Client Error", response=response)

        return config

    monkeypatch.setattr(hub, "cached_snapshot", lambda name: None)
    monkeypatch.setattr(hub, "config", raising(GatedRepoError))
    with pytest.raises(
        RuntimeError, match=r"is gated: accept its licence on https://huggingface.co/org/uni"
    ):
        hub.create("hf-hub:org/uni", pretrained=True, img_size=None, kwargs={}, online=True)
    monkeypatch.setattr(hub, "config", raising(RepositoryNotFoundError))
    with pytest.raises(ValueError, match="There is no model 'org/typo'"):
        hub.create("hf-hub:org/typo", pretrained=True, img_size=None, kwargs={}, online=True)


def test_a_config_not_cached_is_downloaded_at_the_named_revision(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    def download(repo_id, filename, *, revision=None, cache_dir=None):
        calls.append((repo_id, filename, revision, cache_dir))
        path = tmp_path / filename
        path.write_text('{"architecture": "test_efficientnet"}')
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub.config("hf-hub:org/encoder@v2", None) == {"architecture": "test_efficientnet"}
    assert calls == [("org/encoder", "config.json", "v2", tmp_path / "cache")]


def test_hub_names_split_into_repo_and_revision():
    assert hub.split("hf-hub:org/encoder") == ("org/encoder", None)
    assert hub.split("hf-hub:org/encoder@v2") == ("org/encoder", "v2")
    for bad in ("hf-hub:org/", "hf-hub:/encoder", "hf-hub:encoder", "hf-hub:a/b/c"):
        with pytest.raises(ValueError, match="not a hub name"):
            hub.split(bad)


def test_the_cached_snapshot_is_the_named_revisions_with_weights(cached_model):
    _, snapshot = cached_model
    assert hub.cached_snapshot(NAME) == snapshot
    assert hub.cached_snapshot(f"{NAME}@{snapshot.name}") == snapshot
    assert hub.cached_snapshot(f"{NAME}@{'f' * 40}") is None  # another revision: not cached
    (snapshot / "model.safetensors").unlink()
    assert hub.cached_snapshot(NAME) is None  # a config without weights is not a model


def test_a_cached_model_without_weights_and_its_classifier_removed(cached_model, no_network):
    model, snapshot = cached_model
    random, source = create_backbone(NAME, pretrained=False)
    assert source == "random initialisation"
    assert random.pretrained_cfg["hf_hub_id"] == "stmix-test/tiny-encoder"
    assert tuple(random.pretrained_cfg["mean"]) == MEAN  # from the cached config.json
    x = torch.rand(2, 3, 48, 48)
    assert not torch.allclose(random.eval()(x), model(x))
    # a published model with a classifier: stmix builds the encoder without it
    torch.manual_seed(3)
    classifier = timm.create_model("test_efficientnet", pretrained=False, num_classes=3).eval()
    _cache(snapshot.parents[3], classifier, "with-classifier")
    encoder, _ = create_backbone("hf-hub:stmix-test/with-classifier", pretrained=True)
    assert encoder.eval()(x).shape == (2, classifier.num_features)
    torch.testing.assert_close(
        encoder(x), classifier.forward_head(classifier.forward_features(x), pre_logits=True)
    )


def test_a_fixed_size_hub_model_is_built_for_the_patch_size(tmp_path, monkeypatch, no_network):
    vit = timm.create_model("test_vit", pretrained=False, num_classes=0)
    snapshot = _cache(tmp_path, vit, "fixed-size")
    config = json.loads((snapshot / "config.json").read_text())
    config["pretrained_cfg"]["fixed_input_size"] = True  # as published ViTs say
    (snapshot / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    model, _ = create_backbone("hf-hub:stmix-test/fixed-size", pretrained=True, img_size=64)
    assert model.patch_embed.img_size == (64, 64)
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, vit.num_features)
    model, _ = create_backbone("hf-hub:stmix-test/fixed-size", pretrained=True)
    assert model.patch_embed.img_size == (160, 160)  # its own size when none is asked for


def test_a_model_not_cached_is_downloaded_through_timm_by_its_name(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    asked = []

    def config(name, snapshot):
        asked.append((name, snapshot))
        return {"architecture": "test_efficientnet", "pretrained_cfg": {"mean": MEAN}}

    create = timm.create_model

    def create_model(source, **kwargs):
        asked.append((source, kwargs))
        return create("test_efficientnet", **{**kwargs, "pretrained": False})

    monkeypatch.setattr(hub, "config", config)
    monkeypatch.setattr(timm, "create_model", create_model)
    model, source = hub.create(
        "hf-hub:org/encoder", pretrained=True, img_size=None, kwargs={}, online=True
    )
    assert source == "huggingface.co download org/encoder"
    assert asked == [
        ("hf-hub:org/encoder", None),
        ("hf-hub:org/encoder", {"pretrained": True, "num_classes": 0}),
    ]
    assert (
        model.pretrained_cfg["mean"] == MEAN and model.pretrained_cfg["hf_hub_id"] == "org/encoder"
    )


def test_the_cache_follows_the_environment(monkeypatch, tmp_path):
    for name in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub.cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub.cache_dir() == tmp_path / "cache"


def test_creation_arguments_round_trip_through_json():
    assert hub.resolve_kwargs(None) == {} and hub.record_kwargs(None) == {}
    given = {
        "act_layer": "gelu",  # a timm layer name, not a path: timm resolves it
        "norm": "torch.nn.LayerNorm",  # not a *_layer argument: left as given
        "mlp_layer": "torch.nn.Identity",
        "flag": True,
        "ratio": 2,
        "drop": 0.1,
        "none": None,
        "size": (16, 16),
    }
    resolved = hub.resolve_kwargs(given)
    assert resolved == {**given, "mlp_layer": torch.nn.Identity}
    recorded = hub.record_kwargs(resolved)
    assert recorded == {
        **given,
        "mlp_layer": "torch.nn.modules.linear.Identity",
        "size": [16, 16],
    }
    json.dumps(recorded)
    assert hub.resolve_kwargs(recorded)["mlp_layer"] is torch.nn.Identity
    with pytest.raises(ValueError, match=r"backbone_kwargs\['norm_layer'\] = 'no_module\.X' names"):
        hub.resolve_kwargs({"norm_layer": "no_module.X"})
    for value in ({"a": 1}, [1, object()], object()):
        with pytest.raises(ValueError, match=r"backbone_kwargs\['x'\] = .* use numbers, strings"):
            hub.record_kwargs({"x": value})


def test_hub_names_start_with_the_prefix():
    assert hub.is_hub_name("hf-hub:org/model") and hub.is_hub_name("hf-hub:org/model@v1")
    assert not hub.is_hub_name("resnet18") and not hub.is_hub_name("org/hf-hub:model")
