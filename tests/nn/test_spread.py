"""The spread a network's dropout implies: exact for a linear head, sampled for an MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stmix.nn.spread import dropout_std


def test_a_linear_heads_spread_is_the_exact_dropout_variance():
    torch.manual_seed(0)
    head = nn.Linear(12, 5)
    features = torch.randn(7, 12)
    exact = dropout_std(head, features, 0.2)
    samples = torch.stack([head(F.dropout(features, 0.2, training=True)) for _ in range(20000)])
    torch.testing.assert_close(exact, samples.std(dim=0), rtol=0.03, atol=1e-3)
    assert exact.shape == (7, 5)
    doubled = dropout_std(head, 2 * features, 0.2)
    torch.testing.assert_close(doubled, 2 * exact)  # the spread scales with the features
    assert (dropout_std(head, features, 0.5) > exact).all()


def test_no_dropout_no_spread_and_an_mlp_is_sampled_in_place():
    torch.manual_seed(0)
    features = torch.randn(4, 6)
    linear = nn.Linear(6, 3)
    assert torch.equal(dropout_std(linear, features, 0.0), torch.zeros(4, 3))
    mlp = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Dropout(0.3), nn.Linear(8, 3)).eval()
    assert torch.equal(dropout_std(mlp, features, 0.0), torch.zeros(4, 3))
    spread = dropout_std(mlp, features, 0.3, passes=64)
    assert spread.shape == (4, 3) and (spread > 0).all()
    assert not mlp.training  # the head's mode is restored
    few = dropout_std(mlp, features, 0.3, passes=2)
    assert not torch.equal(few, spread)  # sampled, not exact
