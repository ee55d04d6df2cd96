"""The expression kernel's sums and normalisations, checked against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist

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


def test_the_median_distance_is_exact_up_to_the_pair_limit_then_a_seeded_estimate():
    rng = np.random.default_rng(1)
    exact_n = 1000  # 499,500 pairs: at most EXACT_PAIRS
    assert exact_n * (exact_n - 1) // 2 <= _kernel.EXACT_PAIRS < (exact_n + 1) * exact_n // 2
    y = rng.normal(size=(exact_n + 1, 4))
    exact = np.median(pdist(y[:exact_n]))
    assert _kernel.median_distance(y[:exact_n], seed=5) == exact  # no sampling, seed unused
    sampled = _kernel.median_distance(y)  # 500,500 pairs: estimated
    assert sampled == _kernel.median_distance(y, seed=0)  # the default seed is 0
    assert sampled != _kernel.median_distance(y, seed=1)  # the pairs drawn depend on it
    assert sampled == pytest.approx(np.median(pdist(y)), rel=0.02)
    assert _kernel.median_distance(y[:2]) == pytest.approx(np.linalg.norm(y[0] - y[1]))


def test_a_spot_far_from_every_other_still_gets_a_distribution():
    # its kernel values are all ~exp(-1e4) while the other rows' reach ~1: normalising by a
    # global maximum instead of its own row's would underflow its row to 0 / 0
    rng = np.random.default_rng(2)
    y = np.vstack([rng.normal(size=(20, 3)), [[300.0, 300.0, 300.0]]])
    p = _kernel.dense(y, 1.0, "gaussian")
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_the_bandwidth_is_half_the_median_distance_with_the_same_seed():
    y = np.random.default_rng(1).normal(size=(1001, 4))  # sampled: the seed matters
    for seed in (0, 1):
        assert _kernel.bandwidth(y, seed=seed) == _kernel.median_distance(y, seed=seed) / 2
    assert _kernel.bandwidth(y) == _kernel.bandwidth(y, seed=0)
    assert _kernel.bandwidth(y, seed=1) != _kernel.bandwidth(y, seed=0)


def test_the_estimate_draws_pairs_at_every_offset_even_when_spots_are_ordered():
    # spots in array order along a gradient: pairs at one fixed offset would all be as far apart
    y = np.arange(1001.0)[:, None]
    assert _kernel.median_distance(y) == pytest.approx(np.median(pdist(y)), rel=0.02)
