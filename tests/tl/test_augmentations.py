"""Each method's sampler against an independent computation on real C2."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

import stmix
from stmix.nn import CandidateSampler, DenseSampler, Plain, UniformSampler
from stmix.tl import _augmentations


def _build(adata, method, edge_weight="paper"):
    train = np.flatnonzero(adata.obs["stmix_split"] == "train")
    y = adata.X[train]
    aug = _augmentations.build(
        adata,
        method,
        train,
        y,
        alpha=1.0,
        loss_weights=None,
        edge_weight=edge_weight,
        neighbors_key="stmix",
    )
    return aug, train, y


def _kernel(adata, y):
    params = adata.uns["stmix_neighbors"]["params"]
    d = cdist(y.astype(float), y.astype(float))
    k = np.exp(-(d**2) / (2 * params["sigma"] ** 2))
    np.fill_diagonal(k, 0.0)
    return k


def test_snr_draws_with_the_obsp_weights(prepared):
    aug, train, _ = _build(prepared, "snr")
    sampler = aug.sampler
    assert isinstance(sampler, CandidateSampler)
    weights = prepared.obsp["stmix_weights"][train][:, train].toarray()
    for row in range(len(train)):
        got = np.zeros(len(train))
        np.add.at(got, sampler.candidates[row].numpy(), sampler.probs[row].numpy())
        np.testing.assert_allclose(got, weights[row], atol=1e-6)
    torch.testing.assert_close(sampler.edge, sampler.probs)


def test_knn_is_uniform_over_the_same_candidates(prepared):
    snr, _, _ = _build(prepared, "snr")
    knn, _, _ = _build(prepared, "knn")
    assert torch.equal(knn.sampler.candidates, snr.sampler.candidates)
    torch.testing.assert_close(knn.sampler.probs, torch.full_like(knn.sampler.probs, 1 / 5))


def test_cmixup_is_the_kernel_over_all_training_spots(prepared):
    aug, _, y = _build(prepared, "cmixup")
    assert isinstance(aug.sampler, DenseSampler)
    k = _kernel(prepared, y)
    np.testing.assert_allclose(
        aug.sampler.probs.numpy(), k / k.sum(axis=1, keepdims=True), atol=1e-6
    )


def test_reference_edge_weights_normalise_over_all_training_spots(prepared):
    aug, train, y = _build(prepared, "snr", edge_weight="reference")
    k = _kernel(prepared, y)
    expected = k / k.sum(axis=1, keepdims=True)
    s = aug.sampler
    rows = np.repeat(np.arange(len(train))[:, None], s.candidates.shape[1], axis=1)
    np.testing.assert_allclose(s.edge.numpy(), expected[rows, s.candidates.numpy()], rtol=1e-5)
    # sampling is still eq. 6; only the loss weight changes
    paper, _, _ = _build(prepared, "snr")
    torch.testing.assert_close(s.probs, paper.sampler.probs)

    mix, _, _ = _build(prepared, "mixup", edge_weight="reference")
    np.testing.assert_allclose(mix.sampler.edge.numpy(), expected, rtol=1e-5, atol=1e-9)


def test_plain_and_uniform_methods(prepared):
    assert isinstance(_build(prepared, "none")[0], Plain)
    assert _build(prepared, "basic")[0].geometric
    mixup, train, _ = _build(prepared, "mixup")
    assert isinstance(mixup.sampler, UniformSampler) and mixup.sampler.n == len(train)
    assert _build(prepared, "cutmix")[0].boxes


def test_dense_methods_refuse_huge_training_sets(prepared, monkeypatch):
    monkeypatch.setattr(_augmentations, "DENSE_LIMIT", 10)
    with pytest.raises(ValueError, match="n × n"):
        _build(prepared, "cmixup")


def test_reference_edges_of_a_spot_far_from_all_others_are_zero(prepared):
    train = np.flatnonzero(prepared.obs["stmix_split"] == "train")
    prepared.X[train[0]] += 1e3  # its kernel with every other spot underflows to 0
    stmix.pp.neighbors(prepared, 5)
    aug, _, _ = _build(prepared, "snr", edge_weight="reference")
    edge = aug.sampler.edge.numpy()
    assert np.isfinite(edge).all()
    np.testing.assert_array_equal(edge[0], 0.0)  # 0 / 0 is taken as 0
    assert (edge[1:].sum(axis=1) > 0).all()  # the others keep their weights


def test_reference_edges_of_unreachable_pairs_are_exactly_zero():
    rng = np.random.default_rng(0)
    y = rng.random((20, 5))
    y[0] += 1e3  # spot 0: its kernel with every other spot underflows to 0
    rows = np.repeat(np.arange(20), 3)
    cols = (rows + np.tile([1, 2, 3], 20)) % 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns when a result is left uninitialised
        edges = _augmentations._reference_edges(y, rows, cols, [np.arange(20)], [1.0], "gaussian")
    np.testing.assert_array_equal(edges[rows == 0], 0.0)
    assert (edges[(rows != 0) & (cols != 0)] > 0).all()


def test_cmixup_probabilities_stay_within_sections_and_a_lone_spot_mixes_with_itself():
    from stmix.pp import _kernel

    rng = np.random.default_rng(0)
    y = rng.random((6, 4))
    blocks = [np.array([0, 2, 4]), np.array([5]), np.array([1, 3])]
    out = _augmentations._block_kernel(y, blocks, [0.5, 1.0, 0.7], "gaussian")
    expected = np.zeros((6, 6))
    expected[np.ix_(blocks[0], blocks[0])] = _kernel.dense(y[blocks[0]], 0.5, "gaussian")
    expected[5, 5] = 1.0
    expected[np.ix_(blocks[2], blocks[2])] = _kernel.dense(y[blocks[2]], 0.7, "gaussian")
    np.testing.assert_array_equal(out, expected)


def test_the_dense_limit_is_inclusive():
    _augmentations._check_dense(_augmentations.DENSE_LIMIT, "cmixup")
    with pytest.raises(ValueError, match="20,001 training spots"):
        _augmentations._check_dense(_augmentations.DENSE_LIMIT + 1, "cmixup")
