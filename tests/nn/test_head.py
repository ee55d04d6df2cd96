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
    # equal bounds: a feature constant over the training spots
    same = ExpressionHead(2, 1, low=torch.tensor([0.0, 1.0]), high=torch.tensor([0.0, 2.0]))
    assert same(torch.tensor([[5.0, 5.0]])).shape == (1, 1)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_an_untrained_head_predicts_its_offset(kind):
    offset = torch.tensor([0.5, -1.0])
    torch.manual_seed(0)
    net = ExpressionHead(3, 2, kind=kind, offset=offset).eval()
    last = net.head if kind == "linear" else net.head[-1]
    assert not last.weight.any() and not last.bias.any()
    torch.testing.assert_close(net(torch.randn(5, 3) * 100), offset.expand(5, 2))
    assert net.out_features == 2 and net.kind == kind


def test_the_mlp_is_one_hidden_layer_with_gelu_and_dropout():
    net = ExpressionHead(3, 2, kind="mlp", hidden=7, dropout=0.3)
    first, act, drop, last = net.head
    assert (first.in_features, first.out_features) == (3, 7)
    assert (last.in_features, last.out_features) == (7, 2)
    assert isinstance(act, torch.nn.GELU) and drop.p == 0.3 and net.dropout.p == 0.3
    assert ExpressionHead(3, 2, kind="mlp").head[0].out_features == 256  # the default width
    torch.manual_seed(0)
    torch.nn.init.normal_(last.weight)
    x = torch.randn(4, 3)
    net.eval()
    torch.testing.assert_close(net(x), last(act(first(x))))


def test_dropout_acts_on_the_standardised_embedding_in_training():
    net = ExpressionHead(4, 1, dropout=0.5, center=torch.full((4,), 1.0))
    with torch.no_grad():
        net.head.weight.fill_(1.0)
    x = torch.full((2000, 4), 3.0)  # z = 2 everywhere
    torch.manual_seed(0)
    out = net.train()(x)
    values = set(out.squeeze(1).tolist())
    assert values == {0.0, 4.0, 8.0, 12.0, 16.0}  # each kept z = 2 is scaled to 4
    assert out.mean().item() == pytest.approx(8.0, rel=0.05)
    torch.testing.assert_close(net.eval()(x[:1]), torch.tensor([[8.0]]))
    assert ExpressionHead(4, 1).dropout.p == 0.2  # the default


def test_buffers_default_and_copy_their_vectors():
    net = ExpressionHead(3, 2)
    assert net.center.tolist() == [0.0] * 3 and net.scale.tolist() == [1.0] * 3
    assert net.offset.tolist() == [0.0] * 2
    assert net.low.tolist() == [-torch.inf] * 3 and net.high.tolist() == [torch.inf] * 3
    assert {name for name, _ in net.named_buffers()} == {"center", "scale", "offset", "low", "high"}
    center, scale = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0], dtype=float)
    net = ExpressionHead(3, 2, center=center, scale=scale)
    assert net.center.dtype == torch.float32 and net.scale.dtype == torch.float32
    center[0] = 9
    assert net.center.tolist() == [1.0, 2.0, 3.0]  # a copy, not a view of the caller's tensor
    net.eval()
    torch.testing.assert_close(net(torch.tensor([[1, 4, 7]])), torch.zeros(1, 2))


@pytest.mark.parametrize("name", ["center", "scale", "low", "high"])
def test_a_vector_of_the_wrong_length_is_refused(name):
    with pytest.raises(ValueError, match=r"length 3, not \(4,\)"):
        ExpressionHead(3, 2, **{name: torch.zeros(4)})
    with pytest.raises(ValueError, match=r"length 2, not \(3,\)"):
        ExpressionHead(3, 2, offset=torch.zeros(3))


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match=r"one of \['linear', 'mlp'\], not 'ridge'"):
        ExpressionHead(3, 2, kind="ridge")


def test_old_heads_load_unbounded_inside_another_module_too():
    """The missing bounds are filled under the head's own prefix; a full state is left alone."""
    outer = torch.nn.Sequential(head(low=torch.full((3,), -1.0), high=torch.full((3,), 1.0)))
    full = outer.state_dict()
    old = {k: v for k, v in full.items() if not k.endswith(("low", "high"))}
    fresh = torch.nn.Sequential(ExpressionHead(3, 2))
    fresh.load_state_dict(old)
    assert (fresh[0].low == -torch.inf).all() and (fresh[0].high == torch.inf).all()
    fresh.load_state_dict(full)
    assert (fresh[0].low == -1.0).all() and (fresh[0].high == 1.0).all()
    bare = {k.removeprefix("0."): v for k, v in old.items() if "center" not in k}
    missing = ExpressionHead(3, 2).load_state_dict(bare, strict=False).missing_keys
    assert sorted(missing) == ["center", "high", "low"]  # without center, nothing is made up
