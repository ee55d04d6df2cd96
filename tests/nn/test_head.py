"""The embedding head: standardise, hold to the training range, map to expression."""

from __future__ import annotations

import pytest
import torch

from stmix.nn import ExpressionHead


def head(**bounds) -> ExpressionHead:
    torch.manual_seed(0)
    net = ExpressionHead(
        3, 2, center=torch.tensor([1.0, 0.0, 0.0]), scale=torch.tensor([2.0, 1.0, 1.0]), **bounds
    )
    torch.nn.init.normal_(net.head.weight)
    return net.eval()


def test_the_standardised_embedding_is_held_to_low_and_high():
    net = head(low=torch.tensor([-1.0, -1.0, -1.0]), high=torch.tensor([1.0, 2.0, 1.0]))
    x = torch.tensor([[101.0, 0.5, -7.0]])  # z = (50, 0.5, -7) -> (1, 0.5, -1)
    expected = net.head(torch.tensor([[1.0, 0.5, -1.0]]))
    torch.testing.assert_close(net(x), expected)
    inside = torch.tensor([[2.0, 1.5, 0.25]])  # z within the bounds: unchanged
    torch.testing.assert_close(net(inside), net.head(torch.tensor([[0.5, 1.5, 0.25]])))


def test_without_bounds_nothing_is_clipped():
    net = head()
    x = torch.tensor([[101.0, 0.5, -7.0]])
    torch.testing.assert_close(net(x), net.head(torch.tensor([[50.0, 0.5, -7.0]])))


def test_a_head_saved_before_the_bounds_loads_unbounded():
    bounded = head(low=torch.full((3,), -1.0), high=torch.full((3,), 1.0))
    state = {k: v for k, v in bounded.state_dict().items() if k not in ("low", "high")}
    loaded = ExpressionHead(3, 2).eval()
    loaded.load_state_dict(state)
    assert (loaded.low == -torch.inf).all() and (loaded.high == torch.inf).all()
    x = torch.tensor([[101.0, 0.5, -7.0]])
    torch.testing.assert_close(loaded(x), bounded.head(torch.tensor([[50.0, 0.5, -7.0]])))


def test_crossed_bounds_are_refused():
    with pytest.raises(ValueError, match="`low` must not exceed `high`"):
        ExpressionHead(2, 1, low=torch.tensor([0.0, 1.0]), high=torch.tensor([0.0, 0.0]))
