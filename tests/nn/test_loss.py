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
    # a constant gene contributes 0, not NaN
    x[:, 0] = 1.0
    assert torch.isfinite(pearson_loss(x, y))
