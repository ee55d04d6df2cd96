"""Spread, calibrated intervals and the flag of unfamiliar tissue (``tl.impute(interval=)``)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import stmix
from stmix.errors import MissingKeyError
from tests.artefacts import artefacts as _artefacts
from tests.support import TINY, assert_unchanged, snapshot


def _known_noise(n: int = 1200, d: int = 8, genes: int = 6, seed: int = 0) -> ad.AnnData:
    """Expression a linear function of an embedding plus noise of known size (0.3 to 1.0)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    noise = np.linspace(0.3, 1.0, genes)
    y = x @ rng.normal(size=(d, genes)) + rng.normal(size=(n, genes)) * noise + 5
    adata = ad.AnnData(
        X=y.astype(np.float32), var=pd.DataFrame(index=[f"g{i}" for i in range(genes)])
    )
    adata.obsm["emb"] = x
    adata.obsm["spatial"] = rng.uniform(0, 1000, size=(n, 2))
    stmix.pp.split(adata, train=0.5, val=0.2, seed=seed)
    return adata


def _dense(x) -> np.ndarray:
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


@pytest.mark.parametrize("head", ["ridge", "linear"])
def test_intervals_cover_spots_like_the_validation_ones(head):
    adata = _known_noise()
    extra = (
        {}
        if head == "ridge"
        else {"augment": "none", "epochs": 30, "batch_size": 64, "progress": False}
    )
    model = stmix.tl.fit(adata, use_rep="emb", head=head, **extra)
    stmix.tl.impute(adata, model, interval=0.9, progress=False)
    test = (adata.obs["stmix_split"] == "test").to_numpy()
    y, lower, upper = (
        _dense(m)[test] for m in (adata.X, adata.layers["stmix_lower"], adata.layers["stmix_upper"])
    )
    coverage = ((y >= lower) & (y <= upper)).mean(axis=0)
    assert 0.85 <= coverage.mean() <= 0.95, coverage  # 360 test spots per gene
    width = (upper - lower).mean(axis=0)
    if head == "ridge":  # its spread follows the residuals; dropout's follows the weights
        assert np.all(np.diff(width) > 0)  # noisier genes get wider intervals
    assert model.config.uncertainty["method"] == ("ridge" if head == "ridge" else "dropout")


def test_bounds_widen_with_the_level_and_survive_h5ad(prepared, tmp_path):
    model = stmix.tl.fit(prepared, augment="none", **TINY)
    layers = {}
    for level in (0.5, 0.8, 0.95):
        stmix.tl.impute(prepared, model, interval=level, progress=False)
        layers[level] = {r: _dense(prepared.layers[f"stmix_{r}"]) for r in ("lower", "upper")}
    for low, high in ((0.5, 0.8), (0.8, 0.95)):
        assert (layers[high]["lower"] <= layers[low]["lower"] + 1e-6).all()
        assert (layers[high]["upper"] >= layers[low]["upper"] - 1e-6).all()
    pred = _dense(prepared.layers["stmix"])
    assert (layers[0.95]["lower"] <= pred + 1e-6).all() and (pred <= layers[0.95]["upper"]).all()
    assert (layers[0.95]["lower"] >= 0).all()  # clipped as the predictions are
    prepared.write_h5ad(tmp_path / "c2.h5ad")
    back = ad.read_h5ad(tmp_path / "c2.h5ad")
    for key in ("stmix_std", "stmix_lower", "stmix_upper"):
        np.testing.assert_array_equal(_dense(back.layers[key]), _dense(prepared.layers[key]))
    np.testing.assert_array_equal(back.obs["stmix_ood"], prepared.obs["stmix_ood"])
    assert back.uns["stmix_impute"]["params"]["interval"] == 0.95
    assert 0 <= back.obs["stmix_ood"].min() and back.obs["stmix_ood"].max() <= 1

    saved = stmix.tl.load(model.save(tmp_path / "m"))
    pred = stmix.tl.predict(prepared, saved, interval=0.95, progress=False)
    np.testing.assert_allclose(pred.layers["stmix_upper"], layers[0.95]["upper"], rtol=1e-5)


@pytest.mark.parametrize("kind", ["ridge", "fine-tuned"])
def test_the_flag_is_higher_on_artefacts_than_on_tissue(prepared, kind):
    """Real C2 spots against blank, blurred, inked, re-stained ones: frozen Lite0 features (the
    ridge's embedding, or the encoder the flag of a fine-tuned network reads)."""
    if kind == "ridge":
        stmix.tl.embed(prepared, size=112, progress=False)
        model = stmix.tl.fit(prepared, use_rep="stmix_embedding", head="ridge")
    else:
        model = stmix.tl.fit(prepared, augment="none", **TINY)
        assert model.config.uncertainty["flag_encoder"] == "tf_efficientnet_lite0"
    test = (prepared.obs["stmix_split"] == "test").to_numpy()
    stmix.tl.impute(prepared, model, interval=0.9, progress=False)
    tissue = prepared.obs["stmix_ood"].to_numpy()[test]
    assert 0.3 < tissue.mean() < 0.7  # test spots are like the validation spots: about half
    for name, patches in _artefacts(prepared.obsm["stmix_patches"][test]).items():
        odd = prepared[test].copy()
        odd.obsm["stmix_patches"] = patches
        odd.obsm.pop("stmix_embedding", None)  # made again from the altered patches
        flagged = stmix.tl.predict(odd, model, interval=0.9, progress=False).obs["stmix_ood"]
        assert flagged.mean() > tissue.mean() + 0.25, name


def test_what_cannot_give_intervals_says_so_and_writes_nothing(prepared):
    model = stmix.tl.fit(prepared, augment="none", **TINY)
    before = snapshot(prepared)
    with pytest.raises(ValueError, match="`interval` is a coverage level below 1"):
        stmix.tl.impute(prepared, model, interval=1.5)
    model.calibration = None
    with pytest.raises(MissingKeyError, match=r"no calibration for intervals.*val=0\.2"):
        stmix.tl.impute(prepared, model, interval=0.9)
    assert_unchanged(prepared, before)
    adata = _known_noise()
    stmix.pp.split(adata, train=0.7, val=0.0, seed=0)
    alone = stmix.tl.fit(
        adata, use_rep="emb", head="linear", augment="none", epochs=1, progress=False
    )
    assert alone.calibration is None and alone.config.uncertainty == {}


def test_evaluate_reports_coverage_and_width_per_gene_and_section(two_sections):
    model = stmix.tl.fit(two_sections, augment="none", **TINY)
    stmix.tl.impute(two_sections, model, interval=0.8, progress=False)
    table = stmix.tl.evaluate(two_sections, split="test")
    metrics = two_sections.uns["stmix_metrics"]
    assert metrics["interval"] == 0.8 and 0 < metrics["coverage"] <= 1 and metrics["width"] > 0
    test = (two_sections.obs["stmix_split"] == "test").to_numpy()
    y = _dense(two_sections.X)[test]
    inside = (y >= _dense(two_sections.layers["stmix_lower"])[test]) & (
        y <= _dense(two_sections.layers["stmix_upper"])[test]
    )
    assert metrics["coverage"] == pytest.approx(inside.mean())
    np.testing.assert_allclose(two_sections.var["stmix_coverage"], inside.mean(axis=0))
    assert set(metrics["by_library"]) == {"A", "B"}
    assert all("coverage" in m and "width" in m for m in metrics["by_library"].values())
    assert {"coverage", "width"} <= set(table.columns)


def test_maps_draw_the_spread_and_the_flag_beside_the_predictions(prepared, tmp_path):
    import matplotlib.pyplot as plt

    model = stmix.tl.fit(prepared, augment="none", **TINY)
    stmix.tl.impute(prepared, model, progress=False)
    with pytest.raises(MissingKeyError, match=r"interval=0\.9"):
        stmix.pl.maps(prepared, model.genes[:1], trust=True, show=False)
    stmix.tl.impute(prepared, model, interval=0.9, progress=False)
    fig = stmix.pl.maps(prepared, model.genes[:2], trust=True, error=True, show=False)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    gene = model.genes[0]
    assert [t for t in titles if t.startswith(gene)] == [
        f"{gene} · measured",
        f"{gene} · stmix",
        f"{gene} · |stmix − measured|",
        f"{gene} · spread (stmix)",
        f"{gene} · unlike training",
    ]
    fig.savefig(tmp_path / "trust.png")
    plt.close(fig)
