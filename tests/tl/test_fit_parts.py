"""The parts tl.fit is composed of, each on its own: standardisation, network, model config.

No real data needed: small arrays stand in for embeddings, patches and expression.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from stmix._model_config import SCHEMA, ModelConfig
from stmix._presets import TrainingConfig
from stmix.errors import MissingKeyError
from stmix.nn.head import ExpressionHead
from stmix.nn.model import ExpressionPredictor
from stmix.tl._network import STANDARDISED, build_network, check_single_images
from stmix.tl._standardise import standardise
from stmix.tl._training_data import TrainingData


def _embedding(n=40, d=6, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    x[:, 0] = 3.0  # constant
    x[:, 1] = 1.0 + 1e-9 * np.arange(n)  # constant to float32 rounding
    return x


def test_a_constant_feature_is_muted_and_the_rest_standardised():
    x = _embedding()
    seen = standardise(x)
    assert seen.constant == 2 and np.isinf(seen.scale[:2]).all()
    z = seen.apply(x)
    assert (z[:, :2] == 0).all()
    np.testing.assert_allclose(z[:, 2:].mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(z[:, 2:].std(axis=0), 1, rtol=1e-5)
    far = x[:1].copy()
    far[0, 0], far[0, 2] = 1e6, 1e6  # a new spot far outside the training range
    held = seen.apply(far)
    assert held[0, 0] == 0 and held[0, 2] == seen.high[2]


def _data(x, genes=3, use_rep="emb"):
    y = np.random.default_rng(1).normal(size=(len(x), genes)).astype(np.float32)
    train, val = np.arange(30), np.arange(30, len(x))
    return TrainingData(
        inputs=x,
        embedding=None,
        use_rep=use_rep,
        train=train,
        val=val,
        genes=[f"g{i}" for i in range(genes)],
        y_train=y[train],
        y_val=y[val],
        spot_scale=1.0,
        geometry={},
        library_key=None,
        groups=None,
        sections=None,
        store_params={},
    )


def test_a_head_holds_the_training_spots_standardisation_and_warns_when_mostly_constant(caplog):
    x = _embedding(d=6)
    data = _data(x)
    config = TrainingConfig(target="delta")
    head = build_network(
        data, config, head="mlp", pretrained=False, weights=None, backbone_kwargs=None
    )
    assert isinstance(head, ExpressionHead) and head.kind == "mlp"
    seen = standardise(x[data.train])
    for name in STANDARDISED:
        np.testing.assert_array_equal(getattr(head, name).numpy(), getattr(seen, name))
    torch.testing.assert_close(head.offset, torch.from_numpy(data.y_train.mean(axis=0)))
    assert "constant over the training spots" not in caplog.text
    x[:, 2:5] = 7.0  # five of six constant
    with caplog.at_level(logging.WARNING):
        build_network(
            _data(x), config, head="linear", pretrained=False, weights=None, backbone_kwargs=None
        )
    assert "5 of the 6 features" in caplog.text


def test_an_image_network_on_patches_and_one_image_per_step_refused():
    patches = np.zeros((40, 32, 32, 3), dtype=np.uint8)
    data = _data(patches, use_rep=None)
    config = TrainingConfig(backbone="test_efficientnet", target="expression", batch_size=1)
    network = build_network(
        data, config, head="linear", pretrained=False, weights=None, backbone_kwargs=None
    )
    assert isinstance(network, ExpressionPredictor)
    assert (network.offset == 0).all()  # the expression target: no offset
    with pytest.raises(ValueError, match="BatchNorm layers cannot normalise a single image"):
        check_single_images(network, config, "none")
    check_single_images(network, config, "snr")  # three images per anchor


def test_the_model_config_reads_by_attribute_and_by_key_and_round_trips():
    config = ModelConfig.from_json(
        {"genes": ["a", "b"], "backbone": "net", "patch_size": 16, "from_the_future": 1}
    )
    assert config.kind == "image" and config.schema == SCHEMA and config.hidden == 256
    assert config["genes"] == config.genes == ["a", "b"]
    assert config.get("head") is None and "from_the_future" not in config
    with pytest.raises(KeyError):
        config["from_the_future"]
    assert ModelConfig.from_json(config.to_json()) == config
    assert config.replace(dropout=0.0).dropout == 0.0 and config.dropout == 0.2
    assert issubclass(MissingKeyError, KeyError)
