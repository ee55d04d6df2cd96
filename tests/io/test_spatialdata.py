"""SpatialData in and out, on objects built from the real HER2ST sections and written to zarr."""

from __future__ import annotations

import math

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from PIL import Image
from scipy import sparse

import stmix
from stmix.errors import MissingKeyError
from tests.sdata import build, section_elements, visium_hd
from tests.support import TINY

spatialdata = pytest.importorskip("spatialdata")


def _dense(x) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def _mad(a, b) -> float:
    return float(np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).mean())


@pytest.fixture
def c2_store(her2st, c2_slides, tmp_path):
    """C2 as a SpatialData written to zarr and read back (lazily, as users open one)."""
    build([section_elements(her2st("C2"), c2_slides["image"], "C2")]).write(tmp_path / "c2.zarr")
    return spatialdata.read_zarr(tmp_path / "c2.zarr")


def _prepare(adata):
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.var["top"] = False
    adata.var.iloc[np.argsort(-_dense(adata.X).mean(axis=0))[:16], -1] = True
    stmix.pp.patches(adata, size=32, progress=False)
    stmix.pp.split(adata, seed=0)
    stmix.pp.neighbors(adata, 5)


def test_a_section_from_zarr_trains_as_the_plain_anndata_does(her2st, c2_store, c2_slides):
    plain = her2st("C2")
    adata = stmix.io.from_spatialdata(c2_store)
    np.testing.assert_array_equal(adata.obsm["spatial"], plain.obsm["spatial"])
    np.testing.assert_array_equal(_dense(adata.X), _dense(plain.X))
    metadata = adata.uns["spatial"]["C2_spots"]["metadata"]
    assert metadata["spatialdata_image"] == "C2_image" and metadata["source_image_path"]
    diameter = adata.uns["spatial"]["C2_spots"]["scalefactors"]["spot_diameter_fullres"]
    assert diameter == pytest.approx(
        plain.uns["spatial"]["C2"]["scalefactors"]["spot_diameter_fullres"]
    )
    _prepare(adata)
    plain.uns["spatial"]["C2"]["metadata"]["source_image_path"] = None  # cut from the array
    stmix.pp.patches(plain, size=32, image=c2_slides["image"], progress=False)
    assert _mad(adata.obsm["stmix_patches"], plain.obsm["stmix_patches"]) < 0.05
    plain = her2st("C2")
    _prepare(plain)
    plain.obsm["stmix_patches"] = adata.obsm["stmix_patches"].copy()
    settings = {**TINY, "epochs": 2, "augment": "snr", "genes": "top", "seed": 0}
    through = stmix.tl.fit(adata, **settings)
    direct = stmix.tl.fit(plain, **settings)
    patches = adata.obsm["stmix_patches"]
    np.testing.assert_allclose(through.predict(patches), direct.predict(patches), rtol=1e-5)


def test_predictions_go_back_as_a_table_that_round_trips_and_draws(c2_store, tmp_path):
    adata = stmix.io.from_spatialdata(c2_store)
    _prepare(adata)
    model = stmix.tl.fit(adata, **{**TINY, "epochs": 1, "genes": "top"})
    stmix.tl.impute(adata, model)
    stmix.io.to_spatialdata(adata, c2_store)
    table = c2_store.tables["stmix"]
    assert list(table.var_names) == model.genes and table.n_obs == adata.n_obs
    back = spatialdata.read_zarr(c2_store.path)
    written = back.tables["stmix"]
    np.testing.assert_allclose(
        _dense(written.X), stmix.tl.predictions(adata).to_df()[model.genes].to_numpy(), rtol=1e-6
    )
    assert written.uns["spatialdata_attrs"]["region"] in ("C2_spots", ["C2_spots"])
    stmix.io.to_spatialdata(adata, back)  # its own table: replaced

    gene = model.genes[0]
    png = tmp_path / "map.png"
    import spatialdata_plot  # noqa: F401

    back.pl.render_images("C2_image").pl.render_shapes(
        "C2_spots", color=gene, table_name="stmix"
    ).pl.show(coordinate_systems="global")
    plt.savefig(png, dpi=60)
    plt.close("all")
    drawn = np.asarray(Image.open(png).convert("RGB")).astype(int)
    # the spots are coloured by the colormap: strongly saturated pixels where the tissue is
    saturation = drawn.max(axis=2) - drawn.min(axis=2)
    assert (saturation > 80).mean() > 0.02

    user = back.tables["stmix"].copy()
    user.uns.pop("stmix")
    back.tables["mine"] = user
    with pytest.raises(ValueError, match="holds a table stmix did not write"):
        stmix.io.to_spatialdata(adata, back, key_added="mine")
    assert back.tables["mine"] is user


def test_two_sections_with_an_affine_between_spots_and_image(her2st, c2_slides, tmp_path):
    c2, c3 = her2st("C2"), her2st("C3")
    c3_entry = c3.uns["spatial"]["C3"]
    with stmix._image.large_images(), Image.open(c3_entry["metadata"]["source_image_path"]) as im:
        half = np.asarray(im.convert("RGB").reduce(2))
    c3_half = c3.copy()
    c3_half.obsm["spatial"] = c3.obsm["spatial"] / 2
    c3_half.uns["spatial"]["C3"]["scalefactors"]["spot_diameter_fullres"] /= 2
    # spots in µm, turned by 30°; C3's image at half resolution, 12,000 units to the right
    angle = math.radians(30)
    to_um = np.array(
        [
            [math.cos(angle), -math.sin(angle), 50.0],
            [math.sin(angle), math.cos(angle), -20.0],
            [0, 0, 1],
        ]
    ) * np.array([[0.69], [0.69], [1.0]])
    c3_place = np.array([[2.0, 0, 12000.0], [0, 2.0, 0], [0, 0, 1]])
    sdata = build(
        [
            section_elements(c2, c2_slides["image"], "C2", spots_to_pixels=np.linalg.inv(to_um)),
            section_elements(
                c3_half, half, "C3", image_to_system=c3_place, spots_to_pixels=np.linalg.inv(to_um)
            ),
        ]
    )
    sdata.write(tmp_path / "two.zarr")
    adata = stmix.io.from_spatialdata(spatialdata.read_zarr(tmp_path / "two.zarr"))
    assert list(adata.obs["library_id"].cat.categories) == ["C2_spots", "C3_spots"]
    in_c3 = (adata.obs["library_id"] == "C3_spots").to_numpy()
    np.testing.assert_allclose(adata.obsm["spatial"][~in_c3], c2.obsm["spatial"], atol=1e-6)
    np.testing.assert_allclose(adata.obsm["spatial"][in_c3], c3_half.obsm["spatial"], atol=1e-6)
    assert adata.uns["spatial"]["C3_spots"]["metadata"]["spatialdata_image"] == "C3_image"
    assert adata.uns["spatial"]["C3_spots"]["scalefactors"]["spot_diameter_fullres"] == (
        pytest.approx(c3_half.uns["spatial"]["C3"]["scalefactors"]["spot_diameter_fullres"])
    )
    stmix.pp.patches(adata, size=16, progress=False)
    stmix.pp.patches(c3_half, size=16, image=half, progress=False)
    assert _mad(adata.obsm["stmix_patches"][in_c3], c3_half.obsm["stmix_patches"]) < 0.05

    grid = stmix.pp.tile(adata, library_id="C3_spots", spacing=600, tissue="all")
    predicted = ad.AnnData(  # as tl.predict gives it: X the predictions of the grid's spots
        X=np.ones((grid.n_obs, 1), dtype=np.float32),
        obs=grid.obs,
        var=pd.DataFrame(index=["ERBB2"]),
        obsm=dict(grid.obsm),
        uns={**grid.uns, "stmix_impute": {"writer": "stmix.tl.predict", "params": {"layer": None}}},
    )
    sdata = spatialdata.read_zarr(tmp_path / "two.zarr")
    stmix.io.to_spatialdata(predicted, sdata)
    shapes = spatialdata.read_zarr(tmp_path / "two.zarr").shapes["stmix_C3_spots"]
    from stmix.io._frames import apply, systems

    centres = np.c_[shapes.geometry.x, shapes.geometry.y]
    in_system = apply(systems(shapes)["global"], centres)
    np.testing.assert_allclose(in_system, apply(c3_place, grid.obsm["spatial"]), atol=1e-6)


def test_visium_hd_bins_and_larger_spots(c2_slides):
    crop = c2_slides["image"][4000:4700, 4000:4700]
    mpp = c2_slides["mpp"]
    sdata = visium_hd(crop, mpp=mpp)
    bins = stmix.io.from_spatialdata(sdata, table_key="square_008um")
    entry = bins.uns["spatial"]["Visium_HD_square_008um"]
    assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(8 / mpp)
    assert entry["metadata"]["microns_per_pixel"] == pytest.approx(mpp)
    spots = stmix.pp.aggregate(bins, 16)
    assert spots.n_obs == pytest.approx(bins.n_obs / 4, rel=0.1)
    assert _dense(spots.X).sum() == pytest.approx(_dense(bins.X).sum())
    assert set(spots.obs["n_bins"]) <= {1, 2, 4}
    side = spots.uns["spatial"]["Visium_HD_square_008um"]["scalefactors"]["spot_diameter_fullres"]
    assert side == pytest.approx(16 / mpp)
    stmix.pp.patches(spots, size=16, image=crop, progress=False)
    assert spots.uns["stmix_patches"]["params"]["side_fullres"] == pytest.approx(16 / mpp)
    # 55 µm holds 6 or 7 bins of 8 µm across: 36, 42 or 49 bins inside the crop
    inside = stmix.pp.aggregate(bins, 55).obs["n_bins"]
    assert inside.max() == 49 and set(inside[inside >= 36]) <= {36, 42, 49}


def test_bad_objects_are_one_clear_line_and_nothing_is_written(her2st, c2_slides):
    from spatialdata.models import Image2DModel, Labels2DModel, TableModel
    from spatialdata.transformations import Identity

    c2 = her2st("C2")
    sdata = build([section_elements(c2, c2_slides["image"][:4000, :4000], "C2")])
    labels = sdata.tables["table"].copy()
    del labels.uns["spatialdata_attrs"]
    labels.obs["region"] = "cells"
    sdata.labels["cells"] = Labels2DModel.parse(
        np.zeros((100, 100), dtype=np.int32), dims=("y", "x")
    )
    sdata.tables["cell_table"] = TableModel.parse(
        labels, region="cells", region_key="region", instance_key="spot_id"
    )
    with pytest.raises(MissingKeyError, match=r"Pass table_key=: sdata holds the tables"):
        stmix.io.from_spatialdata(sdata)
    with pytest.raises(MissingKeyError, match="annotates the labels element 'cells', not shapes"):
        stmix.io.from_spatialdata(sdata, table_key="cell_table")
    sdata.images["grey"] = Image2DModel.parse(
        np.zeros((1, 500, 500), dtype=np.uint8),
        dims=("c", "y", "x"),
        transformations={"global": Identity()},
    )
    with pytest.raises(ValueError, match=r"'grey' has shape \(1, 500, 500\).*3 \(RGB\)"):
        stmix.io.from_spatialdata(sdata, table_key="table", image_key="grey")
    sdata.images["elsewhere"] = Image2DModel.parse(
        np.zeros((3, 500, 500), dtype=np.uint8),
        dims=("c", "y", "x"),
        transformations={"other": Identity()},
    )
    with pytest.raises(ValueError, match=r"share no coordinate system with the image 'elsewhere'"):
        stmix.io.from_spatialdata(sdata, table_key="table", image_key="elsewhere")
    assert sorted(sdata.tables) == ["cell_table", "table"] and "stmix" not in sdata.tables
