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


def test_sampled_spread_uses_the_rate_asked_and_sixteen_masks_by_default():
    torch.manual_seed(0)
    linear = nn.Linear(6, 3)
    wrapped = nn.Sequential(linear)  # not a Linear itself: sampled, with no dropout inside
    features = torch.randn(5, 6)
    sampled = dropout_std(wrapped, features, 0.1, passes=4000)
    torch.testing.assert_close(sampled, dropout_std(linear, features, 0.1), rtol=0.1, atol=1e-3)

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear, self.calls = nn.Linear(6, 3), 0

        def forward(self, x):
            self.calls += 1
            return self.linear(x)

    counting = Counting()
    dropout_std(counting, features, 0.1)
    assert counting.calls == 16


def test_no_spread_has_the_last_layers_width_in_float32():
    deep = nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 5), nn.Linear(5, 3))
    zero = dropout_std(deep, torch.randn(4, 6, dtype=torch.float64), 0.0)
    assert zero.shape == (4, 3) and zero.dtype == torch.float32 and not zero.any()
