"""Folders users have: a Space Ranger ``outs/`` and HEST-1k samples, built from real sections."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

import stmix
from stmix.errors import MissingKeyError
from tests.slides import write_hest, write_slide, write_space_ranger
from tests.support import TINY


def _dense(x) -> np.ndarray:
    return np.asarray(x.todense() if hasattr(x, "todense") else x)


def test_a_space_ranger_folder_with_its_full_resolution_slide(her2st, c2_slides, tmp_path):
    c2 = her2st("C2")
    outs = write_space_ranger(tmp_path / "outs", c2, "C2")
    adata = stmix.datasets.visium(outs, source_image_path=c2_slides["generic"])
    assert adata.shape == c2.shape and list(adata.obs_names) == list(c2.obs_names)
    np.testing.assert_array_equal(_dense(adata.X), _dense(c2.X))
    np.testing.assert_allclose(adata.obsm["spatial"], np.round(c2.obsm["spatial"]))
    entry = adata.uns["spatial"][next(iter(adata.uns["spatial"]))]
    assert entry["metadata"]["source_image_path"] == str(c2_slides["generic"].resolve())
    assert entry["metadata"]["microns_per_pixel"] == pytest.approx(c2_slides["mpp"])  # the TIFF's
    assert entry["metadata"]["full_resolution_shape"] == [9911, 9274]
    stmix.pp.patches(adata, size=32, progress=False)
    assert adata.uns["stmix_patches"]["params"]["source"].startswith("full-resolution image")
    c2.obsm["spatial"] = np.round(c2.obsm["spatial"])  # Space Ranger writes whole pixels
    stmix.pp.patches(c2, size=32, image=c2_slides["image"], progress=False)
    difference = adata.obsm["stmix_patches"].astype(int) - c2.obsm["stmix_patches"]
    assert np.abs(difference).mean() < 2

    hires_only = stmix.datasets.visium(outs)  # no full-resolution image: the hires PNG
    nearest = cKDTree(c2.obsm["spatial"]).query(c2.obsm["spatial"], k=2)[0][:, 1]
    mpp = hires_only.uns["spatial"][next(iter(hires_only.uns["spatial"]))]["metadata"]
    assert mpp["microns_per_pixel"] == pytest.approx(100 / np.median(nearest))  # Visium's pitch
    with pytest.raises(FileNotFoundError, match=r"holds no filtered_feature_bc_matrix\.h5"):
        stmix.datasets.visium(tmp_path)


def test_hest_samples_are_one_anndata_that_trains(her2st, c2_slides, tmp_path):
    c2, c3 = her2st("C2"), her2st("C3")
    write_hest(tmp_path, "C2", c2, c2_slides["svs"], mpp=c2_slides["mpp"])
    # C3's slide at half resolution: its spots' pixels and pixel size follow
    c3_entry = c3.uns["spatial"]["C3"]
    with stmix._image.large_images(), Image.open(c3_entry["metadata"]["source_image_path"]) as im:
        half = np.asarray(im.convert("RGB").reduce(2))
    c3_mpp = 2 * c3_entry["metadata"]["microns_per_pixel"]
    c3.obsm["spatial"] = c3.obsm["spatial"] / 2
    wsi = write_slide(tmp_path / "C3_half.tif", half, mpp=c3_mpp, flavour="generic")
    write_hest(tmp_path, "C3", c3, wsi, mpp=c3_mpp)

    adata = stmix.datasets.hest(tmp_path, ["C2", "C3"])
    assert list(adata.obs["library_id"].cat.categories) == ["C2", "C3"]
    assert adata.n_obs == c2.n_obs + c3.n_obs
    for sample, mpp in (("C2", c2_slides["mpp"]), ("C3", c3_mpp)):
        entry = adata.uns["spatial"][sample]
        assert entry["metadata"]["source_image_path"].endswith(f"wsis/{sample}.tif")
        assert entry["metadata"]["microns_per_pixel"] == pytest.approx(mpp)
        assert entry["metadata"]["platform"] == "Spatial Transcriptomics"
        assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(100 / mpp)
        assert max(entry["images"]["hires"].shape) == 2000
    stmix.pp.split(adata, test=["C3"], val=0.2, seed=0)
    stmix.pp.patches(adata, size=16, progress=False)
    # the same tissue in both frames: 100 µm patches of C3 from the half-resolution slide
    alone = her2st("C3")
    stmix.pp.patches(alone, size=16, progress=False)
    in_c3 = (adata.obs["library_id"] == "C3").to_numpy()
    difference = adata.obsm["stmix_patches"][in_c3].astype(int) - alone.obsm["stmix_patches"]
    assert np.abs(difference).mean() < 3
    stmix.pp.neighbors(adata, 5)
    top = np.argsort(_dense(adata.X).mean(axis=0))[-8:]
    model = stmix.tl.fit(adata[:, top].copy(), augment="snr", **{**TINY, "epochs": 1})
    assert len(model.genes) == 8


def test_incomplete_hest_samples_say_what_is_missing(her2st, c2_slides, tmp_path):
    c2 = her2st("C2")
    write_hest(tmp_path, "C2", c2, c2_slides["svs"], mpp=c2_slides["mpp"])
    with pytest.raises(FileNotFoundError, match=r"'C9' is incomplete.*st/C9\.h5ad, .*wsis/C9"):
        stmix.datasets.hest(tmp_path, "C9")
    meta = tmp_path / "metadata" / "C2.json"
    record = json.loads(meta.read_text())
    meta.write_text(json.dumps({**record, "spot_diameter": None}))
    with pytest.raises(MissingKeyError, match="no 'spot_diameter'"):
        stmix.datasets.hest(tmp_path, "C2")
    bare = write_slide(tmp_path / "bare.tif", c2_slides["image"][:512, :512], mpp=None)
    (tmp_path / "wsis" / "C2.tif").write_bytes(bare.read_bytes())
    meta.write_text(
        json.dumps({**record, "pixel_size_um_estimated": None, "pixel_size_um_embedded": None})
    )
    with pytest.raises(MissingKeyError, match="records no pixel size"):
        stmix.datasets.hest(tmp_path, "C2")
