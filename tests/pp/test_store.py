"""Patches on disk: a zarr store per section, read lazily."""

from __future__ import annotations

import anndata as ad
import dask.array as da
import numpy as np
import pytest
import zarr

import stmix
from tests.support import assert_unchanged, snapshot


def test_a_store_holds_the_same_patches_lazily(her2st, tmp_path):
    memory = her2st("C2")
    stmix.pp.patches(memory, size=32, progress=False)
    lazy = her2st("C2")
    stmix.pp.patches(lazy, size=32, store=tmp_path / "c2.zarr", progress=False)
    assert isinstance(lazy.obsm["stmix_patches"], da.Array)
    np.testing.assert_array_equal(
        lazy.obsm["stmix_patches"].compute(), memory.obsm["stmix_patches"]
    )
    params = lazy.uns["stmix_patches"]["params"]
    assert params["store"] == str(tmp_path / "c2.zarr")
    stored = zarr.open_array(str(tmp_path / "c2.zarr"), mode="r")
    assert stored.chunks[0] == 16 and stored.attrs["stmix_patches"]["complete"]


def test_one_store_per_section_in_spot_order(two_sections, tmp_path):
    memory = two_sections.copy()
    stmix.pp.patches(memory, size=16, progress=False)
    stmix.pp.patches(two_sections, size=16, store=tmp_path / "stores", progress=False)
    assert sorted(p.name for p in (tmp_path / "stores").iterdir()) == ["A.zarr", "B.zarr"]
    np.testing.assert_array_equal(
        two_sections.obsm["stmix_patches"].compute(), memory.obsm["stmix_patches"]
    )
    # sections cut on their own and concatenated: the stores stay lazy, in one array
    a = two_sections[two_sections.obs["library_id"] == "A"].copy()
    assert isinstance(a.obsm["stmix_patches"], da.Array)


def test_a_store_is_reused_or_refused(her2st, tmp_path, caplog):
    adata = her2st("C2")
    path = tmp_path / "c2.zarr"
    stmix.pp.patches(adata, size=32, store=path, progress=False)
    import logging

    with caplog.at_level(logging.INFO, logger="stmix"):
        stmix.pp.patches(adata, size=32, store=path, progress=False)  # the same patches
    assert "Reusing the patches" in caplog.text
    before = snapshot(adata)
    with pytest.raises(ValueError, match=r"holds 32 × 32 px patches, not 48 × 48"):
        stmix.pp.patches(adata, size=48, store=path, progress=False)
    with pytest.raises(ValueError, match="holds other patches"):
        stmix.pp.patches(adata, size=32, spot_scale=1.5, store=path, progress=False)
    attrs = zarr.open_array(str(path), mode="r+").attrs
    attrs["stmix_patches"] = {**attrs["stmix_patches"], "complete": False}  # cut short
    with pytest.raises(ValueError, match=r"c2.zarr was not completely written"):
        stmix.pp.patches(adata, size=32, store=path, progress=False)
    assert_unchanged(adata, before)


def test_write_h5ad_and_reopening_the_store(her2st, tmp_path):
    adata = her2st("C2")
    stmix.pp.patches(adata, size=32, store=tmp_path / "c2.zarr", progress=False)
    adata.write_h5ad(tmp_path / "with.h5ad")  # anndata copies the lazy patches into the file
    assert ad.read_h5ad(tmp_path / "with.h5ad").obsm["stmix_patches"].shape == (187, 32, 32, 3)
    expected = adata.obsm["stmix_patches"].compute()
    del adata.obsm["stmix_patches"]  # keep the file small: the store stays where it is
    adata.write_h5ad(tmp_path / "without.h5ad")
    back = ad.read_h5ad(tmp_path / "without.h5ad")
    from stmix import _anndata

    np.testing.assert_array_equal(_anndata.patches(back, "stmix_patches").compute(), expected)
    import shutil

    shutil.rmtree(tmp_path / "c2.zarr")
    with pytest.raises(FileNotFoundError, match=r"c2.zarr does not exist"):
        _anndata.patches(back, "stmix_patches")
