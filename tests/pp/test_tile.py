"""Pseudo-spots on a grid over an H&E slide."""

from __future__ import annotations

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pytest
import scanpy as sc
from PIL import Image
from scipy.spatial import cKDTree

import stmix
from tests.support import TINY


@pytest.fixture(scope="module")
def c2_image(data_dir):
    return next((data_dir / "her2st" / "ST-imgs" / "C" / "C2").glob("*.jpg"))


def test_hexagonal_grid_geometry():
    image = np.full((400, 600, 3), 200, dtype=np.uint8)
    grid = stmix.pp.tile(image, spot_diameter=20, spacing=40, tissue="all")
    xy = grid.obsm["spatial"]
    distance, _ = cKDTree(xy).query(xy, k=7)
    interior = (xy[:, 0] > 60) & (xy[:, 0] < 540) & (xy[:, 1] > 60) & (xy[:, 1] < 340)
    np.testing.assert_allclose(distance[interior, 1:], 40.0, rtol=1e-9)  # six at one spacing
    # Visium's doubled columns: row + col always even on a hexagonal grid
    parity = (grid.obs["array_row"] + grid.obs["array_col"]) % 2
    assert parity.nunique() == 1
    assert (xy[:, 0] >= 10).all() and (xy[:, 0] <= 590).all()  # whole spots inside the image
    params = grid.uns["spatial"]["slide"]["scalefactors"]
    assert params["spot_diameter_fullres"] == 20 and params["spacing_fullres"] == 40
    square = stmix.pp.tile(image, spot_diameter=20, spacing=40, grid="square", tissue="all")
    distance, _ = cKDTree(square.obsm["spatial"]).query(square.obsm["spatial"], k=2)
    np.testing.assert_allclose(distance[:, 1], 40.0)
    assert square.n_obs == 15 * 10  # (600 - 20) // 40 + 1 columns, (400 - 20) // 40 + 1 rows


def test_micrometres_with_the_pixel_size():
    image = np.full((300, 300, 3), 200, dtype=np.uint8)
    grid = stmix.pp.tile(image, spot_diameter=55, spacing=100, mpp=0.5, tissue="all")
    scalefactors = grid.uns["spatial"]["slide"]["scalefactors"]
    assert scalefactors["spot_diameter_fullres"] == 110 and scalefactors["spacing_fullres"] == 200
    assert grid.uns["spatial"]["slide"]["metadata"]["microns_per_pixel"] == 0.5


def test_tissue_is_found_on_a_her2st_slide(her2st, c2_image):
    measured = her2st("C2")
    diameter = measured.uns["spatial"]["C2"]["scalefactors"]["spot_diameter_fullres"]
    grid = stmix.pp.tile(c2_image, spot_diameter=diameter, spacing=diameter, all_spots=True)
    on = grid.obs["in_tissue"].to_numpy() == 1
    assert 0.05 < on.mean() < 0.8  # tissue and glass both there
    # the measured spots lie under tissue: the grid point nearest to each is on the mask
    _, nearest = cKDTree(grid.obsm["spatial"]).query(measured.obsm["spatial"])
    assert on[nearest].mean() > 0.9  # measured here: 0.98
    entry = grid.uns["spatial"][c2_image.stem]
    assert (
        entry["images"]["hires"].shape[:2]
        == measured.uns["spatial"]["C2"]["images"]["hires"].shape[:2]
    )
    assert entry["metadata"]["source_image_path"] == str(c2_image.resolve())


def test_a_grid_on_the_measured_centres_gives_the_measured_predictions(prepared, c2_image):
    model = stmix.tl.fit(prepared, augment="none", **TINY)
    stmix.tl.impute(prepared, model, progress=False)
    diameter = prepared.uns["stmix_patches"]["params"]["spot_diameter"]
    grid = stmix.pp.tile(c2_image, spot_diameter=diameter, points=prepared.obsm["spatial"])
    assert grid.n_obs == prepared.n_obs  # every measured spot is on the tissue mask
    stmix.pp.patches(grid, size=model.patch_size, progress=False)
    np.testing.assert_array_equal(grid.obsm["stmix_patches"], prepared.obsm["stmix_patches"])
    pred = stmix.tl.predict(grid, model, progress=False)
    np.testing.assert_array_equal(pred.X, np.asarray(prepared.layers["stmix"]))


def test_a_denser_grid_agrees_with_the_spots_it_surrounds(prepared, c2_image):
    """Spacing half the array pitch: the grid point nearest to each spot predicts alike."""
    stmix.pp.patches(prepared, size=64, progress=False)
    stmix.tl.embed(prepared, size=64, progress=False)  # Lite0, ImageNet weights, at 64 px
    model = stmix.tl.fit(prepared, use_rep="stmix_embedding", head="ridge", progress=False)
    stmix.tl.impute(prepared, model, progress=False)
    params = prepared.uns["spatial"]["C2"]["scalefactors"]
    grid = stmix.pp.tile(
        c2_image,
        spot_diameter=params["spot_diameter_fullres"],
        spacing=params["array_pitch_fullres"] / 2,
    )
    stmix.pp.patches(grid, size=64, progress=False)
    pred = stmix.tl.predict(grid, model, progress=False)
    distance, nearest = cKDTree(grid.obsm["spatial"]).query(prepared.obsm["spatial"])
    assert distance.max() < params["array_pitch_fullres"] / 2  # a grid point near every spot
    spots = stmix.tl.predictions(prepared).X
    varies = np.flatnonzero(spots.std(axis=0) > 0)

    def correlation(points):
        near = pred.X[points]
        return np.mean([np.corrcoef(spots[:, g], near[:, g])[0, 1] for g in varies])

    # measured here: 0.33 for the nearest grid point (patches shifted by up to half a spot
    # diameter), -0.02 for grid points drawn at random
    r_nearest = correlation(nearest)
    r_random = correlation(np.random.default_rng(0).integers(0, grid.n_obs, len(nearest)))
    assert r_nearest > 0.2 and r_nearest > r_random + 0.2, (r_nearest, r_random)


def test_scanpy_squidpy_and_maps_open_a_predicted_slide(prepared, c2_image):
    import squidpy as sq

    model = stmix.tl.fit(prepared, augment="none", **TINY)
    diameter = prepared.uns["stmix_patches"]["params"]["spot_diameter"]
    grid = stmix.pp.tile(c2_image, spot_diameter=diameter, spacing=2 * diameter)
    stmix.pp.patches(grid, size=model.patch_size, progress=False)
    predicted = stmix.tl.predict(grid, model, progress=False)
    gene = model.genes[0]
    fig = stmix.pl.maps(predicted, gene, show=False)  # X is predictions: no measured column
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == [f"{gene} · stmix"]
    axes = sc.pl.spatial(predicted, color=gene, show=False)
    assert axes[0].get_title() == gene
    sq.gr.spatial_neighbors_knn(predicted, n_neighs=6)
    sq.gr.spatial_autocorr(predicted, mode="moran", genes=[gene], n_perms=None)
    assert np.isfinite(predicted.uns["moranI"].loc[gene, "I"])
    plt.close("all")


def test_bad_slides(tmp_path):
    blank = np.full((200, 200, 3), 255, dtype=np.uint8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        stmix.pp.tile(tmp_path / "missing.jpg", spot_diameter=10)
    (tmp_path / "garbage.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="not an image PIL can read"):
        stmix.pp.tile(tmp_path / "garbage.jpg", spot_diameter=10)
    with pytest.raises(ValueError, match=r"No tissue was found.*tissue='all'"):
        stmix.pp.tile(blank, spot_diameter=10)
    with pytest.raises(ValueError, match="spacing"):
        stmix.pp.tile(blank, spot_diameter=10, spacing=0)
    with pytest.raises(ValueError, match="does not fit the 200 × 200 px image"):
        stmix.pp.tile(blank, spot_diameter=300, tissue="all")
    with pytest.raises(ValueError, match="spot diameter is unknown"):
        stmix.pp.tile(blank, tissue="all")
    with pytest.raises(ValueError, match="grid"):
        stmix.pp.tile(blank, spot_diameter=10, grid="triangular")
    with pytest.raises(ValueError, match="boolean"):
        stmix.pp.tile(blank, spot_diameter=10, tissue=np.ones((5, 5)))
    Image.fromarray(blank).save(tmp_path / "white.png")
    with pytest.raises(ValueError, match="No tissue"):
        stmix.pp.tile(tmp_path / "white.png", spot_diameter=10)


def test_a_tissue_mask_and_tiling_a_sections_own_image(her2st):
    measured = her2st("C2")
    mask = np.zeros((100, 100), dtype=bool)
    mask[:50] = True  # the upper half of the slide
    grid = stmix.pp.tile(measured, tissue=mask, spacing=400)
    height = measured.uns["spatial"]["C2"]["metadata"]["full_resolution_shape"][0]
    assert (grid.obsm["spatial"][:, 1] < height / 2 + 1).all()
    assert grid.uns["spatial"]["C2"]["scalefactors"]["spot_diameter_fullres"] == pytest.approx(
        measured.uns["spatial"]["C2"]["scalefactors"]["spot_diameter_fullres"]
    )
    assert isinstance(grid, ad.AnnData) and grid.n_vars == 0
    tall = np.ones((300, 100), dtype=bool)  # C2 is about as wide as it is high
    with pytest.raises(ValueError, match=r"mask is 300 × 100 \(rows × columns\), not the shape"):
        stmix.pp.tile(measured, tissue=tall, spacing=400)
    moved = measured.copy()  # the image file moved away: the stored hires image, with a warning
    moved.uns["spatial"]["C2"]["metadata"]["source_image_path"] = "/nowhere/C2.jpg"
    with pytest.warns(UserWarning, match=r"/nowhere/C2\.jpg\) is not there.*low-resolution"):
        fallback = stmix.pp.tile(moved, tissue=mask, spacing=400)
    assert abs(fallback.n_obs - grid.n_obs) <= 0.1 * grid.n_obs
    wide = np.full((200, 1000, 3), 200, dtype=np.uint8)  # a mask of its transposed shape
    with pytest.raises(ValueError, match=r"it is transposed; pass mask\.T"):
        stmix.pp.tile(wide, spot_diameter=10, tissue=np.ones((100, 20), dtype=bool))
    assert stmix.pp.tile(wide, spot_diameter=10, tissue=np.ones((20, 100), dtype=bool)).n_obs
