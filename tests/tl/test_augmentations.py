"""Each method's sampler against an independent computation on real C2."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import sparse
from scipy.spatial.distance import cdist

import stmix
from stmix.nn import CandidateSampler, DenseSampler, Plain, UniformSampler
from stmix.nn.constants import LOSS_WEIGHTS
from stmix.tl import _augmentations


def _build(adata, method, edge_weight="paper", **kwargs):
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
        **kwargs,
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


def _sections(two_sections):
    """The training spots of the two synthetic sections, their expression and section labels."""
    train = np.flatnonzero(two_sections.obs["stmix_split"] == "train")
    labels = two_sections.obs["library_id"].to_numpy()[train]
    return train, np.asarray(two_sections.X[train]), labels


def _build_sections(adata, method, edge_weight="paper", **kwargs):
    train, y, labels = _sections(adata)
    return _augmentations.build(
        adata,
        method,
        train,
        y,
        **{"alpha": 1.0, "loss_weights": None, "neighbors_key": "stmix", **kwargs},
        edge_weight=edge_weight,
        groups=labels,
    )


def _section_kernel(y, labels, sigmas, normalise=True):
    """Gaussian kernel within each section (zero across and on the diagonal), by hand."""
    d = cdist(y.astype(float), y.astype(float))
    sigma = np.array([sigmas[label] for label in labels])[:, None]
    k = np.exp(-(d**2) / (2 * sigma**2)) * (labels[:, None] == labels[None, :])
    np.fill_diagonal(k, 0.0)
    return k / k.sum(axis=1, keepdims=True) if normalise else k


@pytest.mark.parametrize("edge_weight", ["paper", "reference"])
@pytest.mark.parametrize("method", ["snr", "knn", "cmixup", "mixup", "cutmix"])
def test_every_method_draws_partners_within_the_anchor_section(two_sections, method, edge_weight):
    train, _, labels = _sections(two_sections)
    aug = _build_sections(two_sections, method, edge_weight)
    torch.manual_seed(0)
    anchors = torch.arange(len(train)).repeat(30)
    partners, weights = aug.sampler(anchors)
    assert (labels[partners.numpy()] == labels[anchors.numpy()]).all()
    assert (partners != anchors).all() and (weights > 0).all()
    for label in ("A", "B"):  # every spot of a section can be drawn, from all its anchors
        if method in ("cmixup", "mixup", "cutmix"):
            drawn = np.unique(partners.numpy()[labels[anchors.numpy()] == label])
            assert len(drawn) >= 0.9 * (labels == label).sum()


def test_cmixup_uses_each_section_bandwidth(two_sections):
    _, y, labels = _sections(two_sections)
    sigmas = two_sections.uns["stmix_neighbors"]["params"]["sigma_by_library"]
    assert sigmas["A"] != sigmas["B"]
    aug = _build_sections(two_sections, "cmixup")
    np.testing.assert_allclose(
        aug.sampler.probs.numpy(), _section_kernel(y, labels, sigmas), atol=1e-6
    )
    torch.testing.assert_close(aug.sampler.edge, aug.sampler.probs)


def test_reference_edges_normalise_within_each_section(two_sections):
    train, y, labels = _sections(two_sections)
    sigmas = two_sections.uns["stmix_neighbors"]["params"]["sigma_by_library"]
    expected = _section_kernel(y, labels, sigmas)
    snr = _build_sections(two_sections, "snr", "reference").sampler
    rows = np.repeat(np.arange(len(train))[:, None], snr.candidates.shape[1], axis=1)
    np.testing.assert_allclose(snr.edge.numpy(), expected[rows, snr.candidates.numpy()], rtol=1e-5)
    mixup = _build_sections(two_sections, "mixup", "reference").sampler
    assert isinstance(mixup, DenseSampler)
    np.testing.assert_allclose(mixup.edge.numpy(), expected, rtol=1e-5, atol=1e-12)
    same = labels[:, None] == labels[None, :]
    size = np.array([(labels == label).sum() for label in labels])[:, None]
    uniform = np.where(same, 1.0 / (size - 1), 0.0)
    np.fill_diagonal(uniform, 0.0)
    np.testing.assert_allclose(mixup.probs.numpy(), uniform, rtol=1e-6)


def test_uniform_mixing_of_sections_passes_the_section_of_each_spot(two_sections):
    train, _, labels = _sections(two_sections)
    sampler = _build_sections(two_sections, "mixup").sampler
    assert isinstance(sampler, UniformSampler) and sampler.n == len(train)
    size = np.array([(labels == label).sum() for label in labels])
    np.testing.assert_array_equal(sampler.size.numpy(), size)


def test_a_spot_alone_in_its_section_mixes_with_itself():
    """Uniform mixing with reference edges: a pair swaps; a lone spot's partner is itself."""
    import anndata as ad

    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.random((5, 3)))
    groups = np.array(["A", "C", "B", "A", "C"])  # A and C: pairs; B: one spot
    aug = _augmentations.build(
        adata,
        "mixup",
        np.arange(5),
        adata.X,
        alpha=1.0,
        loss_weights=None,
        edge_weight="reference",
        neighbors_key="stmix",
        groups=groups,
    )
    probs = aug.sampler.probs.numpy()
    np.testing.assert_array_equal(probs[2], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(probs[[0, 3, 1, 4]][:, [3, 0, 4, 1]], np.eye(4))
    assert aug.sampler(torch.tensor([2, 2]))[0].tolist() == [2, 2]


def test_settings_reach_the_mixer(two_sections):
    aug = _build_sections(two_sections, "cutmix", alpha=0.3, loss_weights={"edge": 0.5})
    assert aug.alpha == 0.3 and aug.boxes and aug.loss_weights["edge"] == 0.5
    assert aug.loss_weights["consistency"] == LOSS_WEIGHTS["consistency"]  # the others: defaults
    for method in ("snr", "knn", "cmixup", "mixup"):
        assert not _build_sections(two_sections, method).boxes


def test_build_refuses_unknown_methods_and_a_single_spot(two_sections):
    with pytest.raises(ValueError, match=r"one of \[.*'snr'.*\], not 'manifold'"):
        _build_sections(two_sections, "manifold")
    with pytest.raises(ValueError, match="only 1"):
        _augmentations.build(
            two_sections,
            "mixup",
            np.array([0]),
            np.asarray(two_sections.X[:1]),
            alpha=1.0,
            loss_weights=None,
            edge_weight="paper",
            neighbors_key="stmix",
        )


@pytest.mark.parametrize(
    ("params", "blocks", "expected"),
    [
        ({"sigma_by_library": {"A": 0.3, "B": 0.7}, "sigma": 9.0}, "AB", [0.3, 0.7]),
        ({"sigma": 0.4}, "A", [0.4]),
        ({"sigma": 0.4}, "AB", ["estimated", "estimated"]),  # one bandwidth, two sections
        ({}, "A", ["estimated"]),
        (None, "AB", ["estimated", "estimated"]),
        ({}, "Ab", ["estimated", 1.0]),  # b: a lone spot
        ({}, "Ap", ["estimated", "estimated"]),  # p: a pair of spots has a bandwidth
        ({"sigma_by_library": {"0": 0.3, "1": 0.7}}, [0, 1], [0.3, 0.7]),  # keys written as str
    ],
)
def test_kernel_bandwidths_per_section(params, blocks, expected):
    import anndata as ad

    from stmix.pp import _kernel

    rng = np.random.default_rng(1)
    y = rng.random((9, 4)).astype(np.float32)
    adata = ad.AnnData(y)
    if params is not None:
        adata.uns["x_neighbors"] = {"params": {**params, "kernel": "reference"}}
    index = {"A": np.arange(5), "B": np.arange(5, 9), "b": np.array([8]), 0: np.arange(5)}
    index["p"] = np.array([6, 8])
    index[1] = index["B"]
    chosen = [index[b] for b in blocks]
    kernel, sigmas = _augmentations._kernel_params(adata, y, "x", chosen, list(blocks))
    assert kernel == ("gaussian" if params is None else "reference")
    for sigma, want, block in zip(sigmas, expected, chosen, strict=True):
        if want == "estimated":
            want = _kernel.bandwidth(y[block].astype(np.float64))
        assert sigma == pytest.approx(want, rel=1e-12)


def test_check_neighbors(two_sections):
    train, _, labels = _sections(two_sections)
    for method in ("none", "basic", "mixup", "cutmix", "cmixup"):  # no graph needed
        _augmentations.check_neighbors(two_sections, method, train, "absent")
    for method in ("snr", "knn"):
        with pytest.raises(KeyError, match=r"obsp\['absent_weights'\], which is missing"):
            _augmentations.check_neighbors(two_sections, method, train, "absent")
        _augmentations.check_neighbors(two_sections, method, train, "stmix", labels)
    with pytest.raises(ValueError, match="split changed"):  # a training spot left out
        _augmentations.check_neighbors(two_sections, "snr", train[1:], "stmix")
    weights = two_sections.obsp["stmix_weights"].tolil()
    other = np.setdiff1d(np.arange(two_sections.n_obs), train)[0]
    weights[other, train[0]] = 0.5  # a spot outside the split with a partner
    two_sections.obsp["stmix_weights"] = weights.tocsr()
    with pytest.raises(ValueError, match="split changed"):
        _augmentations.check_neighbors(two_sections, "knn", train, "stmix")


def test_check_neighbors_counts_the_pairs_across_sections(two_sections):
    train, _, labels = _sections(two_sections)
    weights = two_sections.obsp["stmix_weights"].tolil()
    a, b = train[labels == "A"], train[labels == "B"]
    weights[a[0], b[0]] = weights[a[1], b[1]] = weights[b[2], a[2]] = 0.1
    two_sections.obsp["stmix_weights"] = weights.tocsr()
    with pytest.raises(ValueError, match="pairs 3 spots with spots of another section"):
        _augmentations.check_neighbors(two_sections, "snr", train, "stmix", labels)
    with pytest.raises(ValueError, match="no longer sum to 1"):  # the edits broke three rows
        _augmentations.check_neighbors(two_sections, "snr", train, "stmix")
    sums = np.asarray(weights.tocsr().sum(axis=1)).ravel()
    sums[sums == 0] = 1
    two_sections.obsp["stmix_weights"] = sparse.diags(1 / sums) @ weights.tocsr()
    _augmentations.check_neighbors(two_sections, "snr", train, "stmix")  # one section: fine


def test_the_dense_matrix_limit_applies_only_where_a_dense_matrix_is_built(prepared, monkeypatch):
    monkeypatch.setattr(_augmentations, "DENSE_LIMIT", 10)
    for method in ("mixup", "cutmix", "snr", "knn"):  # uniform or sparse: any size
        _build(prepared, method)
    _build(prepared, "snr", edge_weight="reference")
    for method in ("mixup", "cutmix", "cmixup"):
        with pytest.raises(ValueError, match=f"augment='{method}' with these edge weights"):
            _build(prepared, method, edge_weight="reference")


def test_two_training_spots_are_enough_to_mix():
    import anndata as ad

    adata = ad.AnnData(np.array([[0.0, 1.0], [1.0, 0.0], [5.0, 5.0]]))
    aug = _augmentations.build(
        adata,
        "mixup",
        np.array([0, 1]),
        adata.X[:2],
        alpha=1.0,
        loss_weights=None,
        edge_weight="paper",
        neighbors_key="stmix",
    )
    assert aug.sampler(torch.tensor([0, 1]))[0].tolist() == [1, 0]


def test_the_recorded_bandwidth_of_the_neighbors_key_is_used(prepared):
    sigma = 1.7 * prepared.uns["stmix_neighbors"]["params"]["sigma"]  # not the data's own
    prepared.uns["other_neighbors"] = {"params": {"sigma": sigma, "kernel": "gaussian"}}
    train = np.flatnonzero(prepared.obs["stmix_split"] == "train")
    y = np.asarray(prepared.X[train])
    settings = {"alpha": 1.0, "loss_weights": None, "edge_weight": "paper"}
    aug = _augmentations.build(prepared, "cmixup", train, y, neighbors_key="other", **settings)
    d = cdist(y.astype(float), y.astype(float))
    k = np.exp(-(d**2) / (2 * sigma**2))
    np.fill_diagonal(k, 0.0)
    np.testing.assert_allclose(aug.sampler.probs.numpy(), k / k.sum(1, keepdims=True), atol=1e-6)


def test_check_neighbors_names_the_training_spots_the_graph_was_built_on(two_sections):
    train, _, _ = _sections(two_sections)
    params = two_sections.uns["stmix_neighbors"]["params"]
    assert params["n_train"] == len(train)
    weights = two_sections.obsp["stmix_weights"].tolil()
    weights[train[0], :] = 0  # a training spot without partners: allowed
    two_sections.obsp["stmix_weights"] = weights.tocsr()
    _augmentations.check_neighbors(two_sections, "snr", train, "stmix")
    params["n_train"] = len(train) + 3  # the rows still sum to 1, the count does not agree
    with pytest.raises(
        ValueError,
        match=rf"was built on {len(train) + 3} training spots, but this AnnData has "
        rf"{len(train)} and 0 of their weight rows",
    ):
        _augmentations.check_neighbors(two_sections, "snr", train, "stmix")
    del params["n_train"]  # a graph recorded without its count: only the rows are checked
    _augmentations.check_neighbors(two_sections, "snr", train, "stmix")
    del two_sections.uns["stmix_neighbors"]  # no record at all: the rows alone again
    _augmentations.check_neighbors(two_sections, "snr", train, "stmix")
    weights[train[1], train[2]] += 0.5
    weights[train[3], :] = 0
    weights[train[3], train[4]] = 0.5  # a row of one partner counts too
    two_sections.obsp["stmix_weights"] = weights.tocsr()
    with pytest.raises(ValueError, match=r"was built, but this AnnData has \d+ and 2 of"):
        _augmentations.check_neighbors(two_sections, "snr", train, "stmix")


def test_every_method_carries_the_stain_jitter_asked_and_none_by_default(prepared):
    for method in ("none", "basic", "snr", "mixup", "cutmix"):
        assert _build(prepared, method)[0].stain == 0.0
        assert _build(prepared, method, stain=0.05)[0].stain == 0.05
