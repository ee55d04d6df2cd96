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


def test_a_candidate_sampler_checks_its_tables():
    with pytest.raises(ValueError, match="one shape"):
        CandidateSampler(torch.zeros(3, 2, dtype=torch.long), torch.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="one shape"):
        CandidateSampler(torch.zeros(3, dtype=torch.long), torch.ones(3))
    sampler = CandidateSampler(torch.tensor([[1], [0]], dtype=torch.int32), torch.ones(2, 1))
    assert sampler.candidates.dtype == torch.long and sampler.probs.dtype == torch.float32
    assert sampler.edge is sampler.probs  # the edge weight defaults to the probability
    partners, weights = sampler(torch.tensor([0, 1]))
    assert partners.dtype == torch.long and partners.tolist() == [1, 0]
    assert weights.tolist() == [1.0, 1.0]


def test_csr_rows_with_their_own_edge_weights():
    """Probabilities and edge weights are separate tables; rows of unequal length are padded."""
    # anchor 0: candidates 1 (p 0.25), 2 (p 0.75); anchor 1: 0 (p 1); anchor 2: none
    indptr, indices = np.array([0, 2, 3, 3]), np.array([1, 2, 0])
    sampler = CandidateSampler.from_csr(
        indptr, indices, np.array([0.25, 0.75, 1.0]), edge=np.array([5.0, 6.0, 7.0])
    )
    assert sampler.candidates.shape == (3, 2)
    torch.testing.assert_close(sampler.probs, torch.tensor([[0.25, 0.75], [1.0, 0.0], [1, 0.0]]))
    torch.testing.assert_close(sampler.edge, torch.tensor([[5.0, 6.0], [7.0, 0.0], [0.0, 0.0]]))
    assert sampler.candidates.tolist() == [[1, 2], [0, 1], [2, 2]]  # padding: the anchor itself
    torch.manual_seed(0)
    partners, weights = sampler(torch.tensor([0] * 4000 + [1, 2]))
    assert abs((partners[:4000] == 2).float().mean().item() - 0.75) < 0.03
    assert torch.equal(weights[:4000], torch.where(partners[:4000] == 1, 5.0, 6.0))
    assert partners[4000:].tolist() == [0, 2] and weights[4000:].tolist() == [7.0, 0.0]


def test_uniform_csr_weights_are_one_over_the_degree():
    sampler = CandidateSampler.from_csr(np.array([0, 3, 4, 4]), np.array([1, 2, 0, 1]))
    torch.testing.assert_close(sampler.probs, torch.tensor([[1 / 3] * 3, [1, 0, 0], [1, 0, 0]]))
    torch.testing.assert_close(sampler.edge, torch.tensor([[1 / 3] * 3, [1, 0, 0], [0, 0, 0.0]]))
    alone = CandidateSampler.from_csr(np.array([0, 0, 0]), np.array([], dtype=int))
    assert alone.candidates.tolist() == [[0], [1]] and alone.probs.tolist() == [[1.0], [1.0]]
    assert alone(torch.tensor([0, 1]))[1].tolist() == [0.0, 0.0]


def test_a_candidate_sampler_moved_keeps_its_tables():
    sampler = CandidateSampler.from_csr(
        np.array([0, 2, 3, 3]), np.array([1, 2, 0]), np.array([0.5, 0.5, 1.0]), edge=np.ones(3)
    )
    moved = sampler.to("cpu")
    for name in ("candidates", "probs", "edge"):
        assert torch.equal(getattr(moved, name), getattr(sampler, name))


def test_a_dense_sampler_checks_its_edges():
    with pytest.raises(ValueError, match="shape of probs"):
        DenseSampler(torch.full((3, 3), 0.5), edge=torch.ones(3, 2))
    sampler = DenseSampler(torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
    assert sampler.probs.dtype == torch.float32 and sampler.edge is sampler.probs


def test_uniform_partners_stay_in_their_group():
    """Groups of 1, 2, 3 and 5 spots, interleaved: a partner is any other spot of the group."""
    groups = torch.tensor([3, 0, 1, 2, 3, 1, 2, 3, 2, 3, 3])
    sampler = UniformSampler(11, groups)
    torch.manual_seed(0)
    anchors = torch.arange(11).repeat(3000)
    partners, weights = sampler(anchors)
    assert torch.equal(groups[partners], groups[anchors])
    alone = anchors == 1
    assert (partners[alone] == 1).all() and (weights[alone] == 0).all()  # paired with itself
    assert (partners[~alone] != anchors[~alone]).all()
    pair = anchors == 2
    assert (partners[pair] == 5).all() and (weights[pair] == 1.0).all()
    size = torch.bincount(groups)[groups[anchors]]
    torch.testing.assert_close(weights[~alone], 1.0 / (size[~alone] - 1).float())
    for anchor, others in ((3, [6, 8]), (0, [4, 7, 9, 10])):
        counts = torch.bincount(partners[anchors == anchor], minlength=11)[others].float()
        assert (counts / counts.sum() - 1 / len(others)).abs().max() < 0.06, counts


def test_uniform_groups_are_checked_and_moved():
    with pytest.raises(ValueError, match="at least two"):
        UniformSampler(1)
    partners, weights = UniformSampler(2)(torch.tensor([0, 1, 1]))  # two spots: enough
    assert partners.tolist() == [1, 0, 0] and weights.tolist() == [1.0] * 3
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        UniformSampler(4, torch.zeros(3, dtype=torch.long))
    sampler = UniformSampler(4, np.array([0, 0, 1, 1]))
    moved = sampler.to("cpu")
    assert moved.n == 4 and isinstance(moved, UniformSampler)
    for name in ("members", "rank", "start", "size"):
        assert torch.equal(getattr(moved, name), getattr(sampler, name))
    partners, weights = moved(torch.tensor([0, 1, 2, 3]))
    assert partners.tolist() == [1, 0, 3, 2] and weights.tolist() == [1.0] * 4
