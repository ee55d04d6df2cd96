from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PatchCollection

import stmix
from tests.support import TINY


@pytest.fixture
def predicted(prepared):
    rng = np.random.default_rng(0)
    prepared.layers["stmix"] = (prepared.X + rng.normal(0, 0.3, prepared.shape)).astype("f4")
    prepared.layers["other"] = (prepared.X + rng.normal(0, 0.6, prepared.shape)).astype("f4")
    return prepared


def _spot_collections(ax):
    return [
        c for c in ax.collections if isinstance(c, PatchCollection) and c.get_array() is not None
    ]


def test_maps_grid_scale_and_spots(predicted):
    genes = list(predicted.var_names[:2])
    fig = stmix.pl.maps(predicted, genes, split="train", error=True, show=False)
    axes = np.array(fig.axes).reshape(2, -1)  # per row: measured, stmix, cbar, error, cbar
    assert axes.shape == (2, 5)
    entry = predicted.uns["spatial"]["C2"]["scalefactors"]
    radius = entry["spot_diameter_fullres"] * entry["tissue_hires_scalef"] / 2
    for row, gene in enumerate(genes):
        measured, imputed = axes[row, 0], axes[row, 1]
        assert measured.get_title() == f"{gene} · measured"
        assert imputed.get_title() == f"{gene} · stmix"
        assert len(measured.images) == 1  # the H&E image under the spots
        spots = _spot_collections(measured)[0]
        assert len(spots.get_paths()) == predicted.n_obs
        assert spots.get_paths()[0].get_extents().width == pytest.approx(2 * radius, rel=1e-3)
        # one colour scale per gene, shared by the measured and imputed panels
        other = _spot_collections(imputed)[0]
        assert spots.norm.vmin == other.norm.vmin and spots.norm.vmax == other.norm.vmax
        np.testing.assert_allclose(spots.get_array(), predicted.X[:, row])
        # the error panel shows |imputed - measured|
        error = _spot_collections(axes[row, 3])[0]
        np.testing.assert_allclose(
            error.get_array(),
            np.abs(predicted.layers["stmix"][:, row] - predicted.X[:, row]),
            rtol=1e-5,
        )
        # training spots are outlined
        outlines = [c for c in measured.collections if c.get_array() is None]
        n_train = int((predicted.obs["stmix_split"] == "train").sum())
        assert any(len(c.get_paths()) == n_train for c in outlines)
    plt.close(fig)


def test_maps_without_image_and_with_nan_columns(predicted):
    predicted.layers["stmix"][:, 1] = np.nan
    fig = stmix.pl.maps(predicted, predicted.var_names[1], img=False, show=False)
    assert all(len(ax.images) == 0 for ax in fig.axes)
    measured = _spot_collections(fig.axes[0])[0]
    assert len(measured.get_paths()) == predicted.n_obs
    # unknown values: no coloured spot, a grey outline for every spot
    assert all(len(c.get_paths()) == 0 for c in _spot_collections(fig.axes[1]))
    outlines = [c for c in fig.axes[1].collections if c.get_array() is None]
    assert [len(c.get_paths()) for c in outlines] == [predicted.n_obs]
    plt.close(fig)


def test_maps_error_scale_starts_at_zero_even_without_error(predicted):
    predicted.layers["same"] = predicted.X.copy()
    fig = stmix.pl.maps(predicted, predicted.var_names[0], key="same", error=True, show=False)
    error = _spot_collections(fig.axes[3])[0]
    assert (error.norm.vmin, error.norm.vmax) == (0, 1.0)
    np.testing.assert_array_equal(error.get_array(), 0)
    plt.close(fig)


def test_maps_saves(predicted, tmp_path):
    assert stmix.pl.maps(predicted, predicted.var_names[0], save=tmp_path / "m.png") is None
    assert (tmp_path / "m.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"genes": "NOT_A_GENE"}, KeyError, "NOT_A_GENE"),
        ({"genes": "A", "key": "nope"}, KeyError, "nope"),
        ({"genes": "A", "layer": "nope"}, KeyError, "nope"),
        ({"genes": "A", "measured": False, "error": True}, ValueError, "measured expression"),
        ({"genes": "A", "key": []}, ValueError, "`key` is empty"),
        ({"genes": "A", "split": "train", "split_key": "missing"}, KeyError, "missing"),
    ],
)
def test_maps_bad_input(predicted, kwargs, error, match):
    if kwargs.get("genes") == "A":
        kwargs["genes"] = predicted.var_names[0]
    with pytest.raises(error, match=match):
        stmix.pl.maps(predicted, show=False, **kwargs)


def test_history_from_model_and_adata(prepared):
    model = stmix.tl.fit(prepared, augment="snr", **{**TINY, "epochs": 3})
    best = prepared.uns["stmix"]["best_epoch"]
    for source in (model, prepared):
        fig = stmix.pl.history(source, show=False)
        loss_ax, val_ax = fig.axes[0], fig.axes[1]
        labels = [line.get_label() for line in loss_ax.get_lines()]
        assert {"total", "vicinal MSE", "consistency", "edge alignment", "−Pearson"} <= set(labels)
        assert any(np.allclose(line.get_xdata(), best) for line in val_ax.get_lines())
        assert f"best epoch, {best}" in val_ax.get_title()
        plt.close(fig)
    with pytest.raises(KeyError, match=r"stmix\.tl\.fit"):
        stmix.pl.history(prepared, key="nothing")


def test_gene_errors_share_below_the_diagonal(predicted):
    fig = stmix.pl.gene_errors(predicted, "other", "stmix", show=False)
    test = (predicted.obs["stmix_split"] == "test").to_numpy()
    mse_a = ((predicted.layers["other"][test] - predicted.X[test]) ** 2).mean(axis=0)
    mse_b = ((predicted.layers["stmix"][test] - predicted.X[test]) ** 2).mean(axis=0)
    share = (mse_b < mse_a).mean()
    assert f"better for {share:.0%} of {predicted.n_vars} genes" in fig.axes[0].get_title()
    offsets = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(np.sort(offsets[:, 0]), np.sort(mse_a), rtol=1e-5)
    plt.close(fig)


def test_gene_errors_labels_do_not_overlap(predicted):
    # many genes on top of each other: the labels must still be readable
    rng = np.random.default_rng(1)
    a = pd.Series(0.5 + rng.normal(0, 0.01, 40), index=[f"GENE{i}" for i in range(40)])
    b = a + rng.normal(0, 0.01, 40)
    fig = stmix.pl.gene_errors(predicted, a, b, annotate=10, show=False)
    fig.canvas.draw()
    boxes = [text.get_window_extent() for text in fig.axes[0].texts]
    assert 1 <= len(boxes) < 20  # crowded labels were left out
    for i, box in enumerate(boxes):
        assert not any(box.overlaps(other) for other in boxes[i + 1 :])
    plt.close(fig)


def test_gene_errors_from_evaluate_tables_and_var_columns(predicted):
    a = stmix.tl.evaluate(predicted, key="other", key_added="other")
    b = stmix.tl.evaluate(predicted, key="stmix")
    fig1 = stmix.pl.gene_errors(predicted, a, b, labels=("other", "stmix"), show=False)
    fig2 = stmix.pl.gene_errors(
        predicted, "other_mse", "stmix_mse", labels=("other", "stmix"), show=False
    )
    assert fig1.axes[0].get_title() == fig2.axes[0].get_title()
    with pytest.raises(KeyError, match=r"neither predictions \(a layer\) nor a var column"):
        stmix.pl.gene_errors(predicted, "nope", "stmix")
    with pytest.raises(ValueError, match="no scored gene in common"):
        stmix.pl.gene_errors(predicted, pd.Series({"x": 1.0}), "stmix")
    plt.close("all")
