from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import stmix
from stmix.pp import _rings
from tests.conftest import assert_unchanged, snapshot


@pytest.fixture(scope="module")
def c3_128(_her2st_cache, data_dir):
    adata = stmix.datasets.her2st("C3", root=data_dir / "her2st")
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    stmix.pp.select_genes(adata, 128, method="mean")
    adata = adata[:, adata.var["stmix_selected"].to_numpy()].copy()
    adata.X = adata.X.toarray()
    return adata


def test_transformer_beats_the_median_at_every_level(c3_128):
    """Hide observed entries of real HER2ST C3 (128 genes); score both on the hidden ones."""
    adata = c3_128.copy()
    x = adata.X.copy()
    table = {}
    for level in (0.1, 0.3, 0.5, 0.7):
        hidden = (x != 0) & (np.random.default_rng(1).random(x.shape) < level)
        missing = (x == 0) | hidden
        errors = {}
        for method in ("median", "transformer"):
            stmix.pp.complete(adata, method, missing=missing, progress=False)
            completed = adata.layers["stmix_completed"]
            errors[method] = float(((completed - x)[hidden] ** 2).mean())
            np.testing.assert_array_equal(completed[~missing], x[~missing])  # observed kept
        table[level] = errors
    print(pd.DataFrame(table).T)
    for level, errors in table.items():
        assert errors["transformer"] < 0.9 * errors["median"], (level, errors)
    np.testing.assert_array_equal(adata.X, x)  # X is never overwritten


def test_adaptive_median_widens_the_ring():
    # a 5 × 5 square array, one gene; the centre (2, 2) is missing
    rows, cols = np.divmod(np.arange(25), 5)
    values = np.arange(1, 26, dtype=np.float32)[:, None]
    adata = ad.AnnData(
        values.copy(),
        obs=pd.DataFrame({"array_row": rows, "array_col": cols}, index=[str(i) for i in range(25)]),
    )
    centre = 12
    missing = np.zeros((25, 1), dtype=bool)
    missing[centre] = True
    stmix.pp.complete(adata, "median", missing=missing, grid="square")
    ring1 = [6, 7, 8, 11, 13, 16, 17, 18]
    assert adata.layers["stmix_completed"][centre, 0] == np.median(values[ring1])
    # with ring 1 missing too, ring 2 decides
    missing[ring1] = True
    stmix.pp.complete(adata, "median", missing=missing, grid="square")
    ring2 = [i for i in range(25) if i not in ring1 and i != centre]
    assert adata.layers["stmix_completed"][centre, 0] == np.median(values[ring2])
    assert adata.uns["stmix_completed"]["params"]["grid"] == "square"


def test_rings_on_the_three_layouts(her2st, mouse_brain):
    square = _rings.rings(her2st("C2"), 1)
    assert square.grid == "square"
    assert (square.index >= 0).sum(axis=1).max() == 8  # interior spots: 8 around
    knn = _rings.rings(mouse_brain, 2)  # the crop has no array coordinates
    assert knn.grid == "knn" and (knn.ring == 1).sum(axis=1).max() == 6
    # Visium array coordinates from the crop's pixel lattice (rows 119.7 px, half-pitch 68.7 px)
    xy = mouse_brain.obsm["spatial"].astype(float)
    mouse_brain.obs["array_row"] = np.round((xy[:, 1] - xy[:, 1].min()) / 119.7).astype(int)
    mouse_brain.obs["array_col"] = np.round((xy[:, 0] - xy[:, 0].min()) / 68.75).astype(int)
    hexagonal = _rings.rings(mouse_brain, 2)
    assert hexagonal.grid == "hexagonal"
    counts = [(hexagonal.ring[i] == r).sum() for i in range(mouse_brain.n_obs) for r in (1, 2)]
    assert max(counts[0::2]) == 6 and max(counts[1::2]) == 12
    # ring 1 of a Visium spot is at one pitch, ring 2 farther
    spot = int(np.argmax([(hexagonal.ring[i] == 1).sum() for i in range(mouse_brain.n_obs)]))
    near = hexagonal.index[spot][hexagonal.ring[spot] == 1]
    far = hexagonal.index[spot][hexagonal.ring[spot] == 2]
    assert (
        np.linalg.norm(xy[near] - xy[spot], axis=1).max()
        < np.linalg.norm(xy[far] - xy[spot], axis=1).min()
    )
    # KNN rings match the hexagonal ones where the lattice is complete
    assert set(knn.index[spot][knn.ring[spot] == 1]) == set(near)


def test_transformer_is_seeded_and_records_its_history(c3_128, tmp_path):
    adata = c3_128[:, :32].copy()
    a = stmix.pp.complete(adata, epochs=3, seed=2, progress=False, copy=True)
    b = stmix.pp.complete(adata, epochs=3, seed=2, progress=False, copy=True)
    np.testing.assert_array_equal(a.layers["stmix_completed"], b.layers["stmix_completed"])
    assert len(a.uns["stmix_completed"]["history"]["masked_mse"]) == 4
    assert "stmix_completed" not in adata.layers
    np.testing.assert_array_equal(a.layers["stmix_completed_missing"], adata.X == 0)
    a.write_h5ad(tmp_path / "c.h5ad")
    back = ad.read_h5ad(tmp_path / "c.h5ad")
    np.testing.assert_array_equal(back.layers["stmix_completed"], a.layers["stmix_completed"])
    assert back.uns["stmix_completed"]["params"]["method"] == "transformer"


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        ("no_coords", {"grid": "knn"}, KeyError, "spatial"),
        (None, {"missing": np.zeros((3, 3), bool)}, ValueError, "shape"),
        (None, {"missing": "nope"}, KeyError, "nope"),
        ("nan", {}, ValueError, "NaN"),
        ("all_missing", {}, ValueError, "missing in every spot"),
        (None, {"method": "knn"}, ValueError, "method"),
        (None, {"mask_prob": 1.5}, ValueError, "mask_prob"),
        (None, {"grid": "triangular"}, ValueError, "grid"),
    ],
)
def test_bad_input(c3_128, change, kwargs, error, match):
    adata = c3_128[:, :16].copy()
    if change == "no_coords":
        del adata.obsm["spatial"]
    elif change == "nan":
        adata.X[0, 0] = np.nan
    elif change == "all_missing":
        adata.X[:, 3] = 0
    before = snapshot(adata)
    with pytest.raises(error, match=match):
        stmix.pp.complete(adata, **{"epochs": 1, "progress": False, **kwargs})
    assert_unchanged(adata, before)
