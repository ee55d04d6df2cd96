from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import stmix
from stmix.datasets import _her2st


@pytest.mark.parametrize("section", ["C2", "C3", "C4", "C5", "C6"])
def test_sections_load_in_visium_layout(her2st, data_dir, section):
    adata = her2st(section)
    counts = pd.read_csv(data_dir / "her2st" / _her2st.counts_path(section), sep="\t", index_col=0)
    spots = pd.read_csv(data_dir / "her2st" / _her2st.spots_path(section), sep="\t")
    spots.index = spots.x.astype(str) + "x" + spots.y.astype(str)
    expected = [s for s in counts.index if s in set(spots.index[spots.selected == 1])]

    assert list(adata.obs_names) == expected
    assert 150 < adata.n_obs < 200 and adata.n_vars > 15000
    assert sparse.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X[:5].toarray(), counts.loc[expected[:5]].to_numpy())
    np.testing.assert_allclose(
        adata.obsm["spatial"], spots.loc[expected, ["pixel_x", "pixel_y"]].to_numpy()
    )
    np.testing.assert_array_equal(adata.obs["array_col"], spots.loc[expected, "x"])
    np.testing.assert_array_equal(adata.obs["array_row"], spots.loc[expected, "y"])

    entry = adata.uns["spatial"][section]
    scale = entry["scalefactors"]
    hires = entry["images"]["hires"]
    assert hires.dtype == np.uint8 and max(hires.shape[:2]) == 2000 and hires.shape[2] == 3
    full_h, full_w = entry["metadata"]["full_resolution_shape"]
    assert scale["tissue_hires_scalef"] == pytest.approx(2000 / max(full_h, full_w))
    # 100 µm spots on a 200 µm pitch: half the pixel distance between neighbouring spots
    assert scale["spot_diameter_fullres"] == pytest.approx(scale["array_pitch_fullres"] / 2)
    # the pitch is the pixel distance between spots one array step apart
    array = adata.obs[["array_col", "array_row"]].to_numpy()
    steps = np.abs(array[:, None] - array[None]).sum(axis=-1) == 1
    pixels = np.linalg.norm(adata.obsm["spatial"][:, None] - adata.obsm["spatial"][None], axis=-1)
    assert np.median(pixels[steps]) == pytest.approx(scale["array_pitch_fullres"], rel=0.02)
    assert Path(entry["metadata"]["source_image_path"]).is_file()
    # the hires image is the full-resolution image, downscaled: compare a tissue spot
    x, y = (adata.obsm["spatial"][0] * scale["tissue_hires_scalef"]).astype(int)
    full = np.asarray(stmix._image.read_image(entry["metadata"]["source_image_path"], reduce=8)[0])
    fx, fy = (adata.obsm["spatial"][0] * full.shape[1] / full_w).astype(int)
    assert (
        np.abs(
            hires[y - 3 : y + 3, x - 3 : x + 3].mean(axis=(0, 1)).astype(float)
            - full[fy - 2 : fy + 2, fx - 2 : fx + 2].mean(axis=(0, 1))
        ).max()
        < 25
    )


def test_scanpy_draws_the_section_on_its_image(her2st):
    adata = her2st("C3")
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    axes = sc.pl.spatial(adata, color="ERBB2", show=False)
    ax = axes[0]
    assert len(ax.images) == 1
    height, width = ax.images[0].get_array().shape[:2]
    assert (height, width) == adata.uns["spatial"]["C3"]["images"]["hires"].shape[:2]
    # one circle per spot, at its hires position, one spot diameter wide
    scale = adata.uns["spatial"]["C3"]["scalefactors"]
    boxes = [p.get_extents() for p in ax.collections[0].get_paths()]
    centres = np.array([[(b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2] for b in boxes])
    expected = adata.obsm["spatial"] * scale["tissue_hires_scalef"]
    order = np.lexsort(centres.T), np.lexsort(expected.T)
    np.testing.assert_allclose(centres[order[0]], expected[order[1]], atol=0.01)
    assert (centres[:, 0] > 0).all() and (centres[:, 0] < width).all()
    assert (centres[:, 1] > 0).all() and (centres[:, 1] < height).all()
    assert boxes[0].width == pytest.approx(
        scale["spot_diameter_fullres"] * scale["tissue_hires_scalef"]
    )
    plt.close("all")


def test_reference_preprocessing_reproduces_fixture(her2st, reference):
    """The loader yields the spots and counts the reference implementation used on C3."""
    adata = her2st("C3")
    sc.pp.filter_cells(adata, min_genes=1)
    sc.pp.filter_genes(adata, min_cells=1)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    x = adata.X.toarray()
    top = np.argsort(x.mean(axis=0))[-250:]
    assert list(adata.obs_names) == list(reference["obs_names"])
    assert list(adata.var_names[top]) == list(reference["gene_names"])
    np.testing.assert_allclose(x[:, top], reference["expression"], rtol=1e-5, atol=1e-5)


def test_unknown_section_is_a_clear_error(data_dir):
    with pytest.raises(ValueError, match=r"Unknown HER2ST section 'Z9'.*A1"):
        stmix.datasets.her2st("Z9", root=data_dir / "her2st")


def test_incomplete_root_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ST-cnts/C2\.tsv\.gz.*upstream data folder"):
        stmix.datasets.her2st("C2", root=tmp_path)


def test_env_variable_is_the_default_root(monkeypatch, data_dir):
    monkeypatch.setenv("STMIX_DATA_DIR", str(data_dir))
    adata = stmix.datasets.her2st("c6")
    assert "C6" in adata.uns["spatial"]


def test_upstream_urls_match_the_upstream_layout():
    assert _her2st.upstream_url(_her2st.counts_path("C2")) == (
        "https://github.com/almaan/her2st/raw/master/data/ST-cnts/C2.tsv.gz"
    )
    assert _her2st.upstream_url(_her2st.spots_path("H3")) == (
        "https://github.com/almaan/her2st/raw/master/data/ST-spotfiles/H3_selection.tsv"
    )
    assert _her2st.image_dir("C3") == "ST-imgs/C/C3"
    assert _her2st.listing_url("ST-imgs/A/A1") == (
        "https://api.github.com/repos/almaan/her2st/contents/data/ST-imgs/A/A1?ref=master"
    )
    assert len(_her2st.SECTIONS) == 36


def test_download_fetches_the_three_upstream_files(monkeypatch, tmp_path, data_dir):
    """Without network: pooch is replaced by a copy from the local data, recording the calls."""
    import pooch

    calls = []

    def retrieve(url, known_hash, fname, path, downloader):
        calls.append((url, Path(path) / fname))
        relative = url.split("/data/", 1)[1]
        target = Path(path) / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((data_dir / "her2st" / relative).read_bytes())
        return str(target)

    monkeypatch.delenv("STMIX_DATA_DIR", raising=False)
    monkeypatch.setattr(pooch, "os_cache", lambda name: tmp_path / name)
    monkeypatch.setattr(pooch, "retrieve", retrieve)
    adata = stmix.datasets.her2st("C4", root=None)
    urls = [u for u, _ in calls]
    assert urls == [
        "https://github.com/almaan/her2st/raw/master/data/ST-cnts/C4.tsv.gz",
        "https://github.com/almaan/her2st/raw/master/data/ST-spotfiles/C4_selection.tsv",
        "https://github.com/almaan/her2st/raw/master/data/ST-imgs/C/C4/5714_HE_BT_D2.jpg",
    ]
    assert all(str(p).startswith(str(tmp_path / "stmix" / "her2st")) for _, p in calls)
    assert adata.n_obs == 184


def test_image_name_is_listed_upstream_when_unknown(monkeypatch):
    import io
    import json
    import urllib.request

    seen = []

    def urlopen(url, timeout):
        seen.append(url)
        return io.BytesIO(json.dumps([{"name": "readme.txt"}, {"name": "HE_A1.jpg"}]).encode())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    assert _her2st._list_image("A1") == "HE_A1.jpg"
    assert seen == [_her2st.listing_url("ST-imgs/A/A1")]
