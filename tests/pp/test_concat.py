"""Several sections in one AnnData, in squidpy's layout."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pytest

import stmix


def test_her2st_sections_in_squidpys_layout(data_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="stmix"):
        adata = stmix.datasets.her2st(["C3", "C2"], root=data_dir / "her2st")
    c2 = stmix.datasets.her2st("C2", root=data_dir / "her2st")
    c3 = stmix.datasets.her2st("C3", root=data_dir / "her2st")
    assert list(adata.obs["library_id"].cat.categories) == ["C3", "C2"]
    assert (adata.obs["library_id"] == "C3").sum() == c3.n_obs
    assert set(adata.uns["spatial"]) == {"C2", "C3"}
    common = set(c2.var_names) & set(c3.var_names)
    assert set(adata.var_names) == common
    assert f"dropped {len(set(c2.var_names) ^ set(c3.var_names))} genes" in caplog.text
    assert adata.obs_names.is_unique and adata.obs_names[0] == f"{c3.obs_names[0]}-C3"
    # each section's spots keep their coordinates and counts
    c2_spots = (adata.obs["library_id"] == "C2").to_numpy()
    np.testing.assert_array_equal(adata.obsm["spatial"][c2_spots], c2.obsm["spatial"])
    gene = adata.var_names[100]
    np.testing.assert_array_equal(adata[c2_spots, gene].X.toarray(), c2[:, gene].X.toarray())
    adata.write_h5ad(tmp_path / "two.h5ad")
    back = ad.read_h5ad(tmp_path / "two.h5ad")
    assert set(back.uns["spatial"]) == {"C2", "C3"}
    np.testing.assert_array_equal(
        back.uns["spatial"]["C2"]["images"]["hires"], c2.uns["spatial"]["C2"]["images"]["hires"]
    )


def test_any_sections_by_name():
    a = stmix.datasets.synthetic(30, seed=0, library_id="a")
    b = stmix.datasets.synthetic(40, seed=1, library_id="b")
    named = stmix.pp.concat({"first": a, "second": b}, library_key="section")
    assert list(named.obs["section"].cat.categories) == ["first", "second"]
    assert set(named.uns["spatial"]) == {"first", "second"}
    from_uns = stmix.pp.concat([a, b])
    assert list(from_uns.obs["library_id"].cat.categories) == ["a", "b"]
    assert from_uns.n_obs == 70


def test_bad_sections():
    a = stmix.datasets.synthetic(20, seed=0, library_id="a")
    b = stmix.datasets.synthetic(20, seed=1, library_id="b")
    renamed = b.copy()
    renamed.var_names = [f"other_{g}" for g in b.var_names]
    with pytest.raises(ValueError, match="no gene in common"):
        stmix.pp.concat([a, renamed])
    with pytest.raises(ValueError, match="both named 'a'"):
        stmix.pp.concat([a, a.copy()])
    two = stmix.pp.concat([a, b])
    with pytest.raises(ValueError, match="already holds several libraries"):
        stmix.pp.concat({"x": two, "y": a})
    no_image = a.copy()
    del no_image.uns["spatial"]
    with pytest.raises(ValueError, match="exactly one library"):
        stmix.pp.concat([no_image, b])
    with pytest.raises(TypeError, match="not an AnnData"):
        stmix.pp.concat({"x": a, "y": "b.h5ad"})
    with pytest.raises(ValueError, match="Unknown HER2ST section"):
        stmix.datasets.her2st(["C2", "Z9"])
    with pytest.raises(ValueError, match="more than once"):
        stmix.datasets.her2st(["C2", "C2"])
