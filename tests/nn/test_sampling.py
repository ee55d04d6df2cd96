from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy import stats

from stmix.nn import CandidateSampler, DenseSampler, UniformSampler


@pytest.fixture
def reference_sampler(reference):
    """The C3 reference's candidate lists (9 partners) and sampling distribution."""
    neighbors = reference["neighbors"][:, 1:]
    probs = np.take_along_axis(reference["probabilities"], neighbors, axis=1).astype(np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    n, k = neighbors.shape
    indptr = np.arange(0, n * k + 1, k)
    return CandidateSampler.from_csr(indptr, neighbors.ravel(), probs.ravel()), neighbors, probs


def test_partner_frequencies_follow_the_weights(reference_sampler):
    sampler, neighbors, probs = reference_sampler
    torch.manual_seed(0)
    draws = 20_000
    for anchor in (0, 17, 53):
        partners, weights = sampler(torch.full((draws,), anchor))
        assert set(partners.tolist()) <= set(neighbors[anchor].tolist())
        assert anchor not in partners.tolist()
        observed = np.array([(partners == j).sum().item() for j in neighbors[anchor]])
        _, p_value = stats.chisquare(observed, probs[anchor] * draws)
        assert p_value > 0.001, (anchor, observed, probs[anchor] * draws)
        # the edge weight is the probability the partner was drawn with
        expected = dict(zip(neighbors[anchor].tolist(), probs[anchor].tolist(), strict=True))
        assert weights[:5].tolist() == pytest.approx([expected[j] for j in partners[:5].tolist()])


def test_a_skewed_distribution_is_detected(reference_sampler):
    """The chi-square check above can fail: drawing uniformly instead is caught."""
    _, neighbors, probs = reference_sampler
    skewed = np.zeros_like(probs)
    skewed[:, 0] = 1.0
    sampler = CandidateSampler.from_csr(
        np.arange(0, probs.size + 1, probs.shape[1]), neighbors.ravel(), skewed.ravel()
    )
    torch.manual_seed(0)
    partners, _ = sampler(torch.full((2000,), 5))
    observed = np.array([(partners == j).sum().item() for j in neighbors[5]])
    _, p_value = stats.chisquare(observed + 1e-9, probs[5] * 2000)
    assert p_value < 1e-6


def test_uniform_candidates_and_isolated_anchors():
    # anchor 0: candidates 1, 2; anchor 1: none; anchor 2: candidate 0
    sampler = CandidateSampler.from_csr(np.array([0, 2, 2, 3]), np.array([1, 2, 0]))
    torch.manual_seed(0)
    partners, weights = sampler(torch.tensor([0] * 4000 + [1, 2]))
    assert set(partners[:4000].tolist()) == {1, 2}
    assert abs((partners[:4000] == 1).float().mean().item() - 0.5) < 0.05
    assert partners[4000].item() == 1 and weights[4000].item() == 0.0  # paired with itself
    assert partners[4001].item() == 0 and weights[4001].item() == 1.0


def test_dense_and_uniform_samplers_never_pick_the_anchor():
    torch.manual_seed(0)
    probs = torch.rand(20, 20)
    probs.fill_diagonal_(0)
    probs /= probs.sum(dim=1, keepdim=True)
    anchors = torch.arange(20).repeat(200)
    partners, weights = DenseSampler(probs)(anchors)
    assert (partners != anchors).all()
    torch.testing.assert_close(weights, probs[anchors, partners])
    partners, weights = UniformSampler(20)(anchors)
    assert (partners != anchors).all()
    counts = torch.bincount(partners[anchors == 0], minlength=20)[1:]
    assert counts.min() > 0  # every other spot is reachable
    assert torch.allclose(weights, torch.tensor(1 / 19))


def test_batch_of_1024_on_the_cpu_is_fast(reference_sampler):
    """One call for the whole batch, no Python loop per item (the target is under 1 ms)."""
    sampler = reference_sampler[0]
    anchors = torch.randint(0, 54, (1024,))
    sampler(anchors)
    timings = []
    for _ in range(50):
        start = time.perf_counter()
        sampler(anchors)
        timings.append(time.perf_counter() - start)
    assert np.median(timings) < 5e-3  # loose bound for a loaded CI machine


def test_a_dense_sampler_moved_keeps_its_probabilities_and_edges():
    probs = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
    edge = torch.tensor([[0.0, 7.0, 0.0], [3.0, 0.0, 4.0], [0.0, 9.0, 0.0]])
    moved = DenseSampler(probs, edge).to("cpu")
    torch.testing.assert_close(moved.probs, probs)
    torch.testing.assert_close(moved.edge, edge)
    partners, weights = moved(torch.tensor([0, 2]))
    assert partners.tolist() == [1, 1] and weights.tolist() == [7.0, 9.0]


@pytest.mark.parametrize("shape", [(3, 4), (3,), (2, 2, 2)])
def test_a_dense_sampler_needs_a_square_matrix(shape):
    with pytest.raises(ValueError, match="square"):
        DenseSampler(torch.rand(*shape))
