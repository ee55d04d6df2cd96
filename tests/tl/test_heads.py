"""Heads on a frozen encoder's embedding: trained with every vector augmentation, or ridge."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

import stmix
from stmix.tl import _ridge
from stmix.tl._baseline import training_mean
from tests.recorders import Recorder

#: The tiny random-weight encoder gives dense features of the synthetic patches; heads on them
#: learn the task (measured validation MSE: ridge 0.010, linear 0.012, mlp 0.006; mean 0.220).
ENCODER = {"backbone": "test_efficientnet", "pretrained": False, "progress": False, "size": 16}
HEAD = {
    "epochs": 100,
    "lr": 1e-3,
    "batch_size": 16,
    "progress": False,
    "plan_kwargs": {"patience": None},
}


@pytest.fixture
def embedded(synthetic):
    torch.manual_seed(0)
    stmix.tl.embed(synthetic, **ENCODER)
    return synthetic


@pytest.mark.parametrize(
    ("head", "augment"),
    [
        ("linear", "none"),
        ("linear", "mixup"),
        ("linear", "cmixup"),
        ("linear", "knn"),
        ("linear", "snr"),
        ("mlp", "none"),
        ("mlp", "snr"),
        ("ridge", None),
    ],
)
def test_every_head_learns(embedded, head, augment):
    mean = training_mean(embedded, split="val")["mse"]
    model = stmix.tl.fit(embedded, use_rep="stmix_embedding", head=head, augment=augment, **HEAD)
    assert model.kind == "head" and model.config["head"] == head
    val = (embedded.obs["stmix_split"] == "val").to_numpy()
    pred = model.predict(embedded.obsm["stmix_embedding"][val])
    mse = float(((pred - embedded.X[val]) ** 2).mean())
    assert mse < 0.25 * mean, (head, augment, mse, mean)


def test_mixing_on_embeddings_mixes_vectors_with_the_weights(embedded):
    recorder = Recorder()
    stmix.tl.fit(
        embedded,
        use_rep="stmix_embedding",
        augment="snr",
        **{**HEAD, "epochs": 5},
        callbacks=[recorder],
    )
    train = np.flatnonzero(embedded.obs["stmix_split"] == "train")
    weights = embedded.obsp["stmix_weights"][train][:, train].toarray()
    anchors = np.concatenate(recorder.by_epoch("anchors"))
    partners = np.concatenate(recorder.by_epoch("partners"))
    assert (weights[anchors, partners] > 0).all()
    history = embedded.uns["stmix"]["history"]
    assert {"train_vicinal", "train_consistency", "train_edge", "train_correlation"} <= set(history)


def test_ridge_is_hests_pipeline_with_the_penalty_chosen_on_validation(embedded):
    model = stmix.tl.fit(embedded, use_rep="stmix_embedding", head="ridge", progress=False)
    record = embedded.uns["stmix"]
    history = pd.DataFrame(model.history)
    assert len(history) == len(_ridge.PENALTIES)
    best = history["val_mse"].idxmin()
    assert record["params"]["alpha"] == pytest.approx(history.loc[best, "alpha"])
    assert history["val_mse"].max() > 1.5 * history["val_mse"].min()  # the penalty matters

    x = embedded.obsm["stmix_embedding"]
    split = embedded.obs["stmix_split"].to_numpy()
    train, test = split == "train", split == "test"
    k = min(256, int(train.sum()))
    scaler = StandardScaler().fit(x[train])
    seen = scaler.transform(x[train])
    pca = PCA(k, svd_solver="full").fit(seen)
    reference = Ridge(alpha=record["params"]["alpha"]).fit(pca.transform(seen), embedded.X[train])
    # HEST's pipeline, with new spots held to the range of the training spots (as stmix does)
    held = np.clip(scaler.transform(x[test]), seen.min(axis=0), seen.max(axis=0))
    expected = reference.predict(pca.transform(held))
    np.testing.assert_allclose(model.predict(x[test]), expected, atol=2e-4)


@pytest.mark.parametrize("head", ["ridge", "linear"])
def test_a_feature_the_training_spots_barely_show_cannot_blow_up_a_prediction(embedded, head):
    # within one section, with a few dozen training spots, a feature can be ~constant on them
    # (Lite0 on HER2ST C4: sd 2e-6 against a median 0.12) and large on a test spot
    x = embedded.obsm["stmix_embedding"].copy()
    split = embedded.obs["stmix_split"].to_numpy()
    train, test = split == "train", split == "test"
    rng = np.random.default_rng(0)
    x[train, 0] = 1.0 + 1e-4 * rng.standard_normal(train.sum())
    embedded.obsm["stmix_embedding"] = x
    model = stmix.tl.fit(
        embedded, use_rep="stmix_embedding", head=head, augment="none", **{**HEAD, "epochs": 20}
    )
    at_edge = x[test].copy()
    at_edge[:, 0] = x[train, 0].max()
    far = x[test].copy()
    far[:, 0] = 50.0  # 500,000 training standard deviations away
    np.testing.assert_allclose(model.predict(far), model.predict(at_edge), atol=1e-5)
    spread = np.ptp(model.predict(x[train]), axis=0).max()
    assert np.abs(model.predict(far) - model.predict(x[test])).max() <= spread


def test_a_head_saves_loads_and_embeds_new_spots_itself(embedded, tmp_path):
    model = stmix.tl.fit(embedded, use_rep="stmix_embedding", head="mlp", augment="none", **HEAD)
    stmix.tl.impute(embedded, model, progress=False)
    with_embedding = stmix.tl.predictions(embedded).to_df()
    model.save(tmp_path / "head")
    loaded = stmix.tl.load(tmp_path / "head")
    assert loaded.kind == "head" and "mlp head" in repr(loaded)
    # a new AnnData of the same spots without the embedding: impute makes it from the patches
    new = embedded.copy()
    del new.obsm["stmix_embedding"], new.uns["stmix_embedding"], new.layers["stmix"]
    torch.manual_seed(0)  # the test encoder has random weights: the same ones
    stmix.tl.impute(new, loaded, progress=False)
    pd.testing.assert_frame_equal(stmix.tl.predictions(new).to_df(), with_embedding, atol=1e-5)
    assert "stmix_embedding" not in new.obsm  # made for the prediction, not stored


def test_a_ridge_needs_validation_and_training_spots(embedded):
    stmix.pp.split(embedded, train=0.5, val=0.0)
    with pytest.raises(ValueError, match="chooses its penalty on the validation spots"):
        stmix.tl.fit(embedded, use_rep="stmix_embedding", head="ridge", progress=False)
    with pytest.raises(ValueError, match="at least two training spots"):
        _ridge.fit_ridge(np.zeros((1, 4)), np.zeros((1, 2)), np.zeros((3, 4)), np.zeros((3, 2)))


def test_a_degenerate_embedding_is_reported(synthetic, caplog):
    stmix.tl.embed(synthetic, size=16, progress=False)  # Lite0 on 16 px: nearly all features 0
    stmix.tl.fit(synthetic, use_rep="stmix_embedding", augment="none", **{**HEAD, "epochs": 1})
    assert "constant over the training spots" in caplog.text
