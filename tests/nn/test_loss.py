from __future__ import annotations

import pytest
import torch

from stmix.nn import pearson_loss, snr_loss


def _batch(reference):
    t = {
        k: torch.from_numpy(reference[f"batch_{k}"])
        for k in ("yi", "yj", "lam", "w", "mixed_hat", "yi_hat", "yj_hat")
    }
    return t


def test_terms_equal_the_reference(reference):
    b = _batch(reference)
    losses = snr_loss(b["mixed_hat"], b["yi_hat"], b["yj_hat"], b["yi"], b["yj"], b["lam"], b["w"])
    for term in ("vicinal", "consistency", "edge", "correlation"):
        assert losses[term].item() == pytest.approx(float(reference[f"loss_{term}"]), abs=1e-4)
    expected = (
        float(reference["loss_vicinal"])
        + 0.5 * float(reference["loss_consistency"])
        + 50 * float(reference["loss_edge"])
        + 0.05 * float(reference["loss_correlation"])
    )
    assert losses["total"].item() == pytest.approx(expected, abs=1e-3)


def test_weights_and_shapes(reference):
    b = _batch(reference)
    flat = snr_loss(
        b["mixed_hat"],
        b["yi_hat"],
        b["yj_hat"],
        b["yi"],
        b["yj"],
        b["lam"].ravel(),
        b["w"].ravel(),
        consistency=0.0,
        edge=0.0,
        correlation=0.0,
    )
    assert flat["total"].item() == pytest.approx(flat["vicinal"].item())
    assert flat["edge"].item() == pytest.approx(float(reference["loss_edge"]), abs=1e-4)


def test_gradient_reaches_every_prediction(reference):
    b = _batch(reference)
    preds = [b[k].clone().requires_grad_() for k in ("mixed_hat", "yi_hat", "yj_hat")]
    snr_loss(*preds, b["yi"], b["yj"], b["lam"], b["w"])["total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in preds)


def test_pearson_loss_is_minus_mean_correlation():
    torch.manual_seed(0)
    x = torch.randn(16, 5, dtype=torch.float64)
    assert pearson_loss(x, x).item() == pytest.approx(-1.0, abs=1e-6)
    assert pearson_loss(x, -x).item() == pytest.approx(1.0, abs=1e-6)
    y = torch.randn(16, 5, dtype=torch.float64)
    expected = -torch.stack(
        [torch.corrcoef(torch.stack([x[:, g], y[:, g]]))[0, 1] for g in range(5)]
    ).mean()
    assert pearson_loss(x, y).item() == pytest.approx(expected.item(), abs=1e-6)
    # a constant gene contributes 0, not NaN, also when the target is constant too
    x[:, 0] = 1.0
    assert torch.isfinite(pearson_loss(x, y))
    y[:, 0] = 3.0
    assert pearson_loss(x[:, :1], y[:, :1]).item() == 0.0


def _random_batch(seed: int = 0, n: int = 12, genes: int = 6):
    g = torch.Generator().manual_seed(seed)
    preds = [torch.randn(n, genes, generator=g, dtype=torch.float64) for _ in range(3)]
    y_i, y_j = (torch.randn(n, genes, generator=g, dtype=torch.float64) for _ in range(2))
    lam = torch.rand(n, generator=g, dtype=torch.float64)
    w = torch.rand(n, generator=g, dtype=torch.float64)
    return preds, y_i, y_j, lam, w


def test_lam_one_is_plain_mse_on_the_anchor():
    (pred_mix, pred_i, pred_j), y_i, y_j, _, w = _random_batch()
    ones = torch.ones(len(y_i), dtype=torch.float64)
    losses = snr_loss(pred_mix, pred_i, pred_j, y_i, y_j, ones, w)
    assert losses["vicinal"].item() == pytest.approx(((pred_mix - y_i) ** 2).mean().item())
    assert losses["consistency"].item() == pytest.approx(((pred_mix - pred_i) ** 2).mean().item())
    # and lam = 0 is the partner's
    zeros = torch.zeros(len(y_i), dtype=torch.float64)
    losses = snr_loss(pred_mix, pred_i, pred_j, y_i, y_j, zeros, w)
    assert losses["vicinal"].item() == pytest.approx(((pred_mix - y_j) ** 2).mean().item())


def test_zero_edge_weights_give_a_zero_edge_term():
    (pred_mix, pred_i, pred_j), y_i, y_j, lam, w = _random_batch(1)
    losses = snr_loss(pred_mix, pred_i, pred_j, y_i, y_j, lam, torch.zeros_like(w))
    assert losses["edge"].item() == 0.0
    # a pair's weight scales its own contribution, linearly
    one = torch.zeros_like(w)
    one[3] = 2.0
    per_pair = ((pred_i - pred_j) - (y_i - y_j))[3].square().sum() / y_i.numel()
    got = snr_loss(pred_mix, pred_i, pred_j, y_i, y_j, lam, one)["edge"].item()
    assert got == pytest.approx(2.0 * per_pair.item())


def test_swapping_the_pair_with_one_minus_lam_changes_nothing():
    (pred_mix, pred_i, pred_j), y_i, y_j, lam, w = _random_batch(2)
    a = snr_loss(pred_mix, pred_i, pred_j, y_i, y_j, lam, w)
    b = snr_loss(pred_mix, pred_j, pred_i, y_j, y_i, 1 - lam, w)
    for term in a:
        assert a[term].item() == pytest.approx(b[term].item(), abs=1e-12), term


def test_perfect_predictions():
    _, y_i, y_j, lam, w = _random_batch(3)
    y_mix = lam[:, None] * y_i + (1 - lam[:, None]) * y_j
    losses = snr_loss(y_mix, y_i, y_j, y_i, y_j, lam, w)
    assert losses["vicinal"].item() == 0.0
    assert losses["consistency"].item() == pytest.approx(0.0, abs=1e-15)
    assert losses["edge"].item() == 0.0
    assert losses["correlation"].item() == pytest.approx(-1.0, abs=1e-6)  # minus Pearson


def test_weights_multiply_their_terms():
    (pred_mix, pred_i, pred_j), y_i, y_j, lam, w = _random_batch(4)
    base = snr_loss(pred_mix, pred_i, pred_j, y_i, y_j, lam, w)
    weighted = snr_loss(
        pred_mix, pred_i, pred_j, y_i, y_j, lam, w, consistency=3.0, edge=0.25, correlation=7.0
    )
    expected = base["vicinal"] + 3.0 * base["consistency"]
    expected = expected + 0.25 * base["edge"] + 7.0 * base["correlation"]
    assert weighted["total"].item() == pytest.approx(expected.item())


def test_float64_ratios_and_weights_keep_the_predictions_dtype():
    (pred_mix, pred_i, pred_j), y_i, y_j, lam, w = _random_batch(5)
    preds = [p.float() for p in (pred_mix, pred_i, pred_j)]
    losses = snr_loss(*preds, y_i.float(), y_j.float(), lam, w)  # lam and w: float64
    assert all(value.dtype == torch.float32 for value in losses.values())
