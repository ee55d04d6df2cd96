"""Training on several sections, predicting one that was never measured, scoring per section."""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import stmix
from tests.recorders import Recorder
from tests.support import LEARN, assert_unchanged, snapshot


@pytest.mark.parametrize("augment", ["mixup", "cmixup", "knn", "snr"])
def test_partners_stay_within_the_anchors_section(two_sections, augment):
    recorder = Recorder()
    stmix.tl.fit(two_sections, augment=augment, **{**LEARN, "epochs": 3}, callbacks=[recorder])
    train = np.flatnonzero(two_sections.obs["stmix_split"] == "train")
    section = two_sections.obs["library_id"].to_numpy()[train]
    anchors = np.concatenate(recorder.by_epoch("anchors"))
    partners = np.concatenate(recorder.by_epoch("partners"))
    assert (section[anchors] == section[partners]).all()
    assert set(section[anchors]) == {"A", "B"}  # every section's training spots are used
    assert two_sections.uns["stmix"]["params"]["sections"] == ["A", "B"]


def test_a_graph_linking_sections_is_refused(two_sections):
    weights = two_sections.obsp["stmix_weights"].tolil()
    a = np.flatnonzero(
        (two_sections.obs["library_id"] == "A") & (two_sections.obs["stmix_split"] == "train")
    )
    b = np.flatnonzero(
        (two_sections.obs["library_id"] == "B") & (two_sections.obs["stmix_split"] == "train")
    )
    weights[a[0], b[0]] = 0.1
    two_sections.obsp["stmix_weights"] = weights.tocsr()
    before = snapshot(two_sections)
    with pytest.raises(ValueError, match=r"another section.*library_key"):
        stmix.tl.fit(two_sections, augment="snr", **{**LEARN, "epochs": 1})
    assert_unchanged(two_sections, before)


def test_a_held_out_section_that_was_never_measured(two_sections):
    """Train on section A; predict section B from its image and spot positions alone."""
    stmix.pp.split(two_sections, test=["B"], val=0.2, seed=0)
    stmix.pp.neighbors(two_sections, 5)
    model = stmix.tl.fit(two_sections, augment="snr", **LEARN)
    assert model.config["params"]["sections"] == ["A"]
    stmix.tl.impute(two_sections, model, progress=False)
    table = stmix.tl.evaluate(two_sections, split="test")
    record = two_sections.uns["stmix_metrics"]
    assert set(record["by_library"]) == {"B"} and set(table["library_id"]) == {"B"}
    # the synthetic expression follows the image the same way in both sections: a model of
    # section A predicts section B (measured: mean PCC 0.70)
    assert record["by_library"]["B"]["pcc"] > 0.5

    b = (two_sections.obs["library_id"] == "B").to_numpy()
    unmeasured = ad.AnnData(obs=pd.DataFrame(index=two_sections.obs_names[b]))
    unmeasured.obsm["spatial"] = two_sections.obsm["spatial"][b]
    unmeasured.uns["spatial"] = {"B": two_sections.uns["spatial"]["B"]}
    stmix.pp.patches(unmeasured, size=model.patch_size, progress=False)
    pred = stmix.tl.predict(unmeasured, model, progress=False)
    np.testing.assert_allclose(pred.X, np.asarray(two_sections.layers["stmix"])[b], atol=1e-6)


def test_evaluate_per_section_with_the_fields_numbers(two_sections):
    model = stmix.tl.fit(two_sections, augment="none", **{**LEARN, "epochs": 2})
    stmix.tl.impute(two_sections, model, progress=False)
    test = (two_sections.obs["stmix_split"] == "test").to_numpy()
    a = (two_sections.obs["library_id"] == "A").to_numpy()
    two_sections.X[test & a, 3] = 1.5  # a gene constant in section A's test spots
    table = stmix.tl.evaluate(two_sections)
    record = two_sections.uns["stmix_metrics"]
    assert list(table.columns) == ["library_id", "mse", "mae", "pcc"]
    assert len(table) == 2 * two_sections.n_vars
    section_a = record["by_library"]["A"]
    assert section_a["n_skipped"] == 1 and record["by_library"]["B"]["n_skipped"] == 0
    rows = table[table["library_id"] == "A"]
    assert np.isnan(rows.loc["gene_3", "pcc"])
    assert section_a["pcc"] == pytest.approx(np.nanmean(rows["pcc"]))
    assert section_a["n_spots"] == int((test & a).sum())
    # with fewer genes than 50, the highly expressed genes are all genes
    assert section_a["pcc_heg"] == pytest.approx(section_a["pcc"])
    assert record["n_spots"] == int(test.sum()) and "pcc_heg" in record


def test_heg_is_the_fifty_highest_expressed(prepared):
    rng = np.random.default_rng(0)
    big = ad.AnnData(
        rng.gamma(2.0, 1.0, (120, 80)).astype(np.float32),
        obs=pd.DataFrame(
            {"stmix_split": pd.Categorical(["test"] * 120)}, index=map(str, range(120))
        ),
    )
    big.var_names = [f"g{i}" for i in range(80)]
    noise = rng.normal(0, 1.0, big.shape)
    big.layers["stmix"] = (big.X + noise).astype(np.float32)
    table = stmix.tl.evaluate(big)
    top = np.argsort(-big.X.mean(axis=0))[:50]
    assert big.uns["stmix_metrics"]["pcc_heg"] == pytest.approx(table["pcc"].iloc[top].mean())


def test_maps_draw_one_row_per_gene_and_section(two_sections):
    model = stmix.tl.fit(two_sections, augment="none", **{**LEARN, "epochs": 1})
    stmix.tl.impute(two_sections, model, progress=False)
    fig = stmix.pl.maps(two_sections, ["gene_0", "gene_1"], show=False)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "gene_0 · measured · A" in titles and "gene_1 · stmix · B" in titles
    assert len(titles) == 2 * 2 * 2  # genes × sections × (measured, imputed)
    fig = stmix.pl.maps(two_sections, "gene_0", library_id="B", show=False)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == [
        "gene_0 · measured · B",
        "gene_0 · stmix · B",
    ]
    with pytest.raises(KeyError, match="Section 'C'"):
        stmix.pl.maps(two_sections, "gene_0", library_id="C", show=False)
    with pytest.raises(ValueError, match="split"):
        stmix.pl.maps(two_sections, "gene_0", split="nope", show=False)
    plt.close("all")


def test_completion_within_each_section(two_sections):
    """Sections share array coordinates: neighbours and medians must stay in each section."""
    together = stmix.tl.complete(two_sections, "median", copy=True)
    for name in ("A", "B"):
        alone = two_sections[two_sections.obs["library_id"] == name].copy()
        stmix.tl.complete(alone, "median", library_key="library_id")
        here = (two_sections.obs["library_id"] == name).to_numpy()
        np.testing.assert_array_equal(
            together.layers["stmix_completed"][here], alone.layers["stmix_completed"]
        )
    stmix.tl.complete(two_sections, "transformer", epochs=1, progress=False)
    assert two_sections.uns["stmix_completed"]["params"]["library_key"] == "library_id"


def test_genes_scored_per_section(two_sections):
    stmix.pp.select_genes(two_sections, 3, method="mean")
    per_section = [
        two_sections[two_sections.obs["library_id"] == s].X.mean(axis=0) for s in ("A", "B")
    ]
    np.testing.assert_allclose(
        two_sections.var["stmix_selected_score"], np.mean(per_section, axis=0), rtol=1e-6
    )
    stmix.pp.select_genes(two_sections, 3, method="moran")
    assert two_sections.var["stmix_selected"].sum() == 3
    assert two_sections.uns["stmix_selected"]["params"]["library_key"] == "library_id"


def test_a_gene_constant_in_every_section_gets_no_score_and_no_warning(two_sections):
    import squidpy  # noqa: F401  (its import warnings are not ours)

    x = np.array(two_sections.X, dtype=np.float32)
    x[:, 0] = np.where(two_sections.obs["library_id"] == "A", 1.0, 2.0)  # varies only between
    two_sections.X = x
    squidpys = logging.getLogger("spatialdata._logging")  # where squidpy's graph INFO goes
    level, records = squidpys.level, []
    handler = logging.Handler()
    handler.emit = records.append
    squidpys.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # "Mean of empty slice"
            stmix.pp.select_genes(two_sections, 3, method="moran")
    finally:
        squidpys.removeHandler(handler)
    assert records == []  # not one "Creating graph ..." line per section
    assert squidpys.level == level
    score = two_sections.var["stmix_selected_score"].to_numpy()
    assert np.isnan(score[0]) and not two_sections.var["stmix_selected"].iloc[0]
    assert np.isfinite(score[1:]).all()


def test_write_h5ad_with_several_sections(two_sections, tmp_path):
    model = stmix.tl.fit(two_sections, augment="snr", **{**LEARN, "epochs": 1})
    stmix.tl.impute(two_sections, model, progress=False)
    stmix.tl.evaluate(two_sections)
    two_sections.write_h5ad(tmp_path / "two.h5ad")
    back = ad.read_h5ad(tmp_path / "two.h5ad")
    assert set(back.uns["spatial"]) == {"A", "B"}
    assert back.uns["stmix_metrics"]["by_library"]["A"]["pcc"] == pytest.approx(
        two_sections.uns["stmix_metrics"]["by_library"]["A"]["pcc"]
    )
    assert list(back.uns["stmix"]["params"]["sections"]) == ["A", "B"]
    assert back.uns["stmix_neighbors"]["params"]["sigma_by_library"]["B"] > 0
