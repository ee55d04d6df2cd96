"""The adaptive median, with every expected value worked out by hand on asymmetric data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import stmix
from stmix.pp import _median, _rings


def _grid(rows: int, cols: int, values: np.ndarray) -> ad.AnnData:
    row, col = np.divmod(np.arange(rows * cols), cols)
    return ad.AnnData(
        values.astype(np.float32),
        obs=pd.DataFrame(
            {"array_row": row, "array_col": col}, index=[str(i) for i in range(rows * cols)]
        ),
    )


def test_median_not_mean_of_the_first_ring():
    # 3 x 3 square array, one gene; the centre (4) is missing; its 8 neighbours are skewed
    values = np.array([1, 1, 1, 2, 0, 2, 3, 50, 100], dtype=float)[:, None]
    adata = _grid(3, 3, values)
    missing = np.zeros((9, 1), dtype=bool)
    missing[4] = True
    stmix.tl.complete(adata, "median", missing=missing, grid="square")
    # sorted ring 1: 1 1 1 2 2 3 50 100 -> median (2 + 2) / 2 = 2; the mean would be 20
    assert adata.layers["stmix_completed"][4, 0] == 2.0
    np.testing.assert_array_equal(
        adata.layers["stmix_completed"][~missing[:, 0], 0], values[~missing[:, 0], 0]
    )


def test_median_widens_to_the_nearest_ring_with_an_observation():
    # 5 x 5 square array; the centre (12) and its whole first ring are missing
    values = np.zeros((25, 1))
    ring2 = [0, 1, 2, 3, 4, 5, 9, 10, 14, 15, 19, 20, 21, 22, 23, 24]
    values[ring2, 0] = [1, 1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 90, 100]
    adata = _grid(5, 5, values)
    missing = np.zeros((25, 1), dtype=bool)
    missing[[6, 7, 8, 11, 12, 13, 16, 17, 18], 0] = True
    stmix.tl.complete(adata, "median", missing=missing, grid="square")
    # ring 2 of the centre, sorted: seven 1s, then 2 ... 8, 90, 100 (16 values): the 8th and
    # 9th are 2 and 3, so the median is 2.5; the mean would be 232 / 16 = 14.5
    assert adata.layers["stmix_completed"][12, 0] == 2.5
    # a first-ring spot (6) finds observed spots in its own ring 1: 0, 1, 2, 5, 10 -> 1 1 1 1 2
    assert adata.layers["stmix_completed"][6, 0] == 1.0


def test_fallback_is_the_genes_median_over_observed_spots():
    # a strip of 20 spots; spots 0-8 miss gene 0, so spot 0 sees nothing observed within the
    # 8 rings the median widens to, and falls back to the gene's median
    values = np.zeros((20, 2))
    values[9:, 0] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1000]  # median 6, mean 95.5
    values[:, 1] = np.arange(20) + 100.0  # gene 1 is observed everywhere
    adata = _grid(1, 20, values)
    missing = np.zeros((20, 2), dtype=bool)
    missing[:9, 0] = True
    stmix.tl.complete(adata, "median", missing=missing, grid="square")
    completed = adata.layers["stmix_completed"]
    assert completed[0, 0] == 6.0  # the fallback: gene 0's median, not the mean, not gene 1's
    assert completed[1, 0] == 1.0  # spot 1 reaches spot 9 (value 1) in its ring 8
    assert completed[8, 0] == 1.0  # spot 8: ring 1 holds spot 9 only
    np.testing.assert_array_equal(completed[:, 1], values[:, 1])


def test_the_transformer_reads_every_ring_up_to_n_rings():
    adata = _grid(5, 5, np.zeros((25, 1)))
    neighbourhood = _rings.rings(adata, _median.MAX_RINGS, grid="square")
    for n_rings, count in ((1, 8), (2, 24)):
        index, ring = _median.tokens(neighbourhood, n_rings)
        centre = 12
        assert (index[centre] >= 0).sum() == count
        assert sorted(ring[centre][index[centre] >= 0]) == [1] * 8 + [2] * (count - 8)
        corner = 0
        assert (index[corner] >= 0).sum() == {1: 3, 2: 8}[n_rings]
        padded = index < 0
        assert (index[padded] == -1).all() and (ring[padded] == 0).all()  # the documented pads


@pytest.mark.parametrize("sparse", [False, True])
def test_the_mask_can_be_a_layer_dense_or_sparse(sparse):
    from scipy import sparse as sp

    adata = _grid(3, 3, np.arange(9.0)[:, None])
    mask = np.zeros((9, 1), dtype=bool)
    mask[[2, 4], 0] = True
    adata.layers["gone"] = sp.csr_matrix(mask) if sparse else mask.astype(np.uint8)
    found = _median.missing_mask(adata, adata.X, "gone")
    assert found.dtype == bool
    np.testing.assert_array_equal(found, mask)
    np.testing.assert_array_equal(_median.missing_mask(adata, adata.X, None), adata.X == 0)
    with pytest.raises(KeyError, match="does not exist"):
        _median.missing_mask(adata, adata.X, "nope")


def test_the_adaptive_median_is_float32_for_every_entry():
    adata = _grid(3, 3, np.arange(9.0)[:, None])
    mask = np.zeros((9, 1), dtype=bool)
    mask[4] = True
    neighbourhood = _rings.rings(adata, _median.MAX_RINGS, grid="square")
    out = _median.adaptive_median(adata.X.astype(np.float64), mask, neighbourhood)
    assert out.dtype == np.float32 and out.shape == (9, 1)
    # the centre's ring 1: 0 1 2 3 5 6 7 8 -> (3 + 5) / 2; spot 0's ring 1: 1 3 (4 missing) -> 2
    assert out[4, 0] == 4.0 and out[0, 0] == 2.0


@pytest.mark.parametrize("bad", [np.zeros((3, 3), bool), "nope", np.full((9, 1), 2)])
def test_bad_masks(bad):
    adata = _grid(3, 3, np.ones((9, 1)))
    with pytest.raises((ValueError, KeyError)):
        _median.missing_mask(adata, adata.X, bad)


def _placed(cols: list[int], values: list[float]) -> ad.AnnData:
    """One gene on spots of one array row, at the given columns."""
    return ad.AnnData(
        np.array(values, dtype=np.float32)[:, None],
        obs=pd.DataFrame(
            {"array_row": 0, "array_col": cols}, index=[str(i) for i in range(len(cols))]
        ),
    )


def test_a_single_neighbour_is_a_ring_of_its_own_and_an_isolated_spot_does_not_stop_the_others():
    # spot 0 stands alone (column 100); spots 1-4 are a strip at columns 0-3. Spot 1 misses
    # its value; its ring 1 holds spot 2 alone (value 1), its ring 2 spots 2 and 3 (1, 10).
    nan = np.nan
    adata = _placed([100, 0, 1, 2, 3], [nan, nan, 1.0, 10.0, 10.0])
    missing = np.isnan(adata.X)
    adata.X = np.nan_to_num(adata.X)
    stmix.tl.complete(adata, "median", missing=missing, grid="square")
    completed = adata.layers["stmix_completed"][:, 0]
    assert completed[1] == 1.0  # ring 1's one value, not ring 2's median 5.5
    assert completed[0] == 10.0  # no neighbour within 8 rings: the gene's median of 1, 10, 10


def test_spots_without_any_neighbour_fall_back_to_the_genes_median():
    adata = _placed([0, 100, 200, 300], [0.0, 1.0, 4.0, 100.0])
    missing = np.array([[True], [False], [False], [False]])
    stmix.tl.complete(adata, "median", missing=missing, grid="square")
    assert adata.layers["stmix_completed"][0, 0] == 4.0  # median of 1, 4, 100 (mean 35)
