"""The expression kernel's sums and normalisations, checked against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from stmix import _distance
from stmix.pp import _kernel


@pytest.fixture(scope="module")
def several_blocks():
    # more rows than one block of distances holds, so later blocks' diagonals are exercised
    rng = np.random.default_rng(0)
    return rng.normal(size=(_distance.CHUNK + 300, 3))


@pytest.mark.parametrize("kernel", ["gaussian", "reference"])
def test_row_totals_sum_the_kernel_over_every_other_spot(several_blocks, kernel):
    y, sigma = several_blocks, 0.8
    d = cdist(y, y)
    k = np.exp(-(d**2 if kernel == "gaussian" else d) / (2 * sigma**2))
    np.fill_diagonal(k, 0.0)
    np.testing.assert_allclose(_kernel.row_totals(y, sigma, kernel), k.sum(axis=1), rtol=1e-9)


def test_dense_is_the_row_normalised_kernel_without_the_diagonal(several_blocks):
    y, sigma = several_blocks, 0.8
    k = np.exp(-(cdist(y, y) ** 2) / (2 * sigma**2))
    np.fill_diagonal(k, 0.0)
    p = _kernel.dense(y, sigma, "gaussian")
    np.testing.assert_allclose(p, k / k.sum(axis=1, keepdims=True), rtol=1e-9, atol=1e-300)
    assert (np.diag(p) == 0).all()
