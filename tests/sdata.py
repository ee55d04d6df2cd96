"""SpatialData objects as spatialdata-io writes them, built from the real HER2ST sections.

Each section is an H&E image (a multiscale pyramid of (c, y, x) uint8), its spots as circles
with the spot radius, and a table annotating them; optionally the spots live in another frame
than the image (an affine between them), and several sections share one object.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse


def section_elements(
    section: ad.AnnData,
    image: np.ndarray,
    name: str,
    *,
    system: str = "global",
    image_to_system: np.ndarray | None = None,
    spots_to_pixels: np.ndarray | None = None,
) -> tuple[dict, dict, ad.AnnData]:
    """The image, shapes and table rows of one HER2ST section.

    ``image_to_system`` places the image in ``system`` (default identity); the spots are
    stored in their own frame, mapped to the image's pixels by ``spots_to_pixels`` (default
    identity), so that their transformation to ``system`` is ``image_to_system @
    spots_to_pixels``.
    """
    from spatialdata.models import Image2DModel, ShapesModel
    from spatialdata.transformations import Affine

    image_to_system = np.eye(3) if image_to_system is None else image_to_system
    spots_to_pixels = np.eye(3) if spots_to_pixels is None else spots_to_pixels
    pixels = np.asarray(section.obsm["spatial"], dtype=np.float64)
    inverse = np.linalg.inv(spots_to_pixels)
    stored = pixels @ inverse[:2, :2].T + inverse[:2, 2]
    radius = section.uns["spatial"][name]["scalefactors"]["spot_diameter_fullres"] / 2
    radius /= float(np.sqrt(abs(np.linalg.det(spots_to_pixels[:2, :2]))))
    images = {
        f"{name}_image": Image2DModel.parse(
            np.ascontiguousarray(image.transpose(2, 0, 1)),
            dims=("c", "y", "x"),
            scale_factors=[2, 2],
            chunks=(3, 1024, 1024),
            transformations={system: Affine(image_to_system, ("x", "y"), ("x", "y"))},
        )
    }
    shapes = {
        f"{name}_spots": ShapesModel.parse(
            stored,
            geometry=0,
            radius=np.full(len(stored), radius),
            index=np.arange(len(stored)),
            transformations={
                system: Affine(image_to_system @ spots_to_pixels, ("x", "y"), ("x", "y"))
            },
        )
    }
    rows = ad.AnnData(X=sparse.csr_matrix(section.X), var=section.var[[]].copy())
    rows.obs_names = section.obs_names
    rows.obs["region"] = f"{name}_spots"
    rows.obs["spot_id"] = np.arange(section.n_obs)
    return images, shapes, rows


def build(parts: list[tuple[dict, dict, ad.AnnData]], table: str = "table"):
    """One SpatialData of sections' elements, with one table annotating all their spots."""
    import spatialdata as sd
    from spatialdata.models import TableModel

    images, shapes = {}, {}
    for part_images, part_shapes, _ in parts:
        images.update(part_images)
        shapes.update(part_shapes)
    rows = ad.concat([rows for _, _, rows in parts], join="inner")
    rows.obs["region"] = pd.Categorical(rows.obs["region"])
    parsed = TableModel.parse(
        rows, region=sorted(shapes), region_key="region", instance_key="spot_id"
    )
    return sd.SpatialData(images=images, shapes=shapes, tables={table: parsed})


def visium_hd(image: np.ndarray, *, mpp: float, bin_um: float = 8.0, genes: int = 12, seed=0):
    """Square bins of ``bin_um`` over ``image`` with counts that follow its darkness (synthetic),
    named as spatialdata-io names Visium HD's (``square_008um``)."""
    import geopandas as gpd
    import spatialdata as sd
    from shapely.geometry import box
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity

    side = bin_um / mpp
    height, width = image.shape[:2]
    xs = np.arange(0, width - side, side)
    ys = np.arange(0, height - side, side)
    corners = np.array([(x, y) for y in ys for x in xs])
    polygons = [box(x, y, x + side, y + side) for x, y in corners]
    label = f"square_{int(bin_um):03d}um"
    shapes = ShapesModel.parse(
        gpd.GeoDataFrame(geometry=polygons, index=np.arange(len(polygons))),
        transformations={"global": Identity()},
    )
    rng = np.random.default_rng(seed)
    grey = image.mean(axis=2)
    darkness = np.array(
        [1 - grey[int(y) : int(y + side), int(x) : int(x + side)].mean() / 255 for x, y in corners]
    )
    rates = np.outer(darkness * 4 + 0.1, rng.uniform(0.5, 2.0, genes))
    counts = sparse.csr_matrix(rng.poisson(rates).astype(np.float32))
    rows = ad.AnnData(X=counts, var=pd.DataFrame(index=[f"gene_{g}" for g in range(genes)]))
    rows.obs["region"] = pd.Categorical([f"Visium_HD_{label}"] * len(corners))
    rows.obs["location_id"] = np.arange(len(corners))
    table = TableModel.parse(
        rows, region=f"Visium_HD_{label}", region_key="region", instance_key="location_id"
    )
    image_element = Image2DModel.parse(
        np.ascontiguousarray(image.transpose(2, 0, 1)),
        dims=("c", "y", "x"),
        transformations={"global": Identity()},
    )
    return sd.SpatialData(
        images={"Visium_HD_full_image": image_element},
        shapes={f"Visium_HD_{label}": shapes},
        tables={label: table},
    )
