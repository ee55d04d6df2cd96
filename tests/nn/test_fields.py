"""Several fields of view per spot: stacked along the channels, read by one encoder, mixed alike."""

from __future__ import annotations

import pytest
import torch

from stmix.nn import Mix, Plain, UniformSampler
from stmix.nn.images import to_float
from stmix.nn.model import ExpressionPredictor
from stmix.nn.stain import hed_jitter


@pytest.fixture
def stacked():
    """Ten spots, each an 8 px patch and a wider field (also 8 px), stacked: (10, 8, 8, 6)."""
    torch.manual_seed(0)
    return torch.randint(30, 250, (10, 8, 8, 6), dtype=torch.uint8)


def test_fields_become_channels_in_their_order(stacked):
    images = to_float(stacked)
    assert images.shape == (10, 6, 8, 8)
    torch.testing.assert_close(images[:, :3], to_float(stacked[..., :3].contiguous()))
    torch.testing.assert_close(images[:, 3:], to_float(stacked[..., 3:].contiguous()))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3k\) for k fields of view"):
        to_float(stacked[..., :4])


def test_the_network_reads_each_field_with_one_encoder_and_fuses_before_the_head():
    torch.manual_seed(0)
    network = ExpressionPredictor(5, "test_efficientnet", fields=2, dropout=0.0).eval()
    d = network.num_features
    assert network.head.in_features == 2 * d
    x = torch.rand(4, 6, 32, 32)
    features = network.forward_features(x)
    spot, wide = network.encoder(x[:, :3]), network.encoder(x[:, 3:])
    torch.testing.assert_close(features, torch.cat([spot, wide], dim=1))
    torch.testing.assert_close(network(x), network.head(features) + network.offset)
    with pytest.raises(ValueError, match=r"reads 2 fields of view, \(N, 6, H, W\)"):
        network(torch.rand(4, 3, 32, 32))
    with pytest.raises(ValueError, match="fields must be at least 1"):
        ExpressionPredictor(5, "test_efficientnet", fields=0)


def test_one_field_is_the_plain_network():
    torch.manual_seed(0)
    one = ExpressionPredictor(5, "test_efficientnet").eval()
    torch.manual_seed(0)
    same = ExpressionPredictor(5, "test_efficientnet", fields=1).eval()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(one(x), same(x))
    assert one.head.in_features == one.num_features


def test_both_fields_of_a_pair_are_mixed_with_the_same_ratio(stacked):
    targets = torch.randn(10, 3)
    anchors = torch.tensor([0, 2, 4, 6])
    torch.manual_seed(1)
    step = Mix(UniformSampler(10))(anchors, stacked, targets)
    x_mix, x_i, x_j = step.inputs.chunk(3)
    assert x_mix.shape == (4, 6, 8, 8)
    lam = step.lam.view(-1, 1, 1, 1)
    assert not torch.allclose(step.lam, step.lam[:1].expand(4))  # a ratio per pair
    for field in (slice(0, 3), slice(3, 6)):
        torch.testing.assert_close(x_mix[:, field], lam * x_i[:, field] + (1 - lam) * x_j[:, field])


def test_stain_jitter_gives_every_field_of_a_spot_the_same_draw():
    torch.manual_seed(0)
    rgb = torch.rand(5, 3, 8, 8) * 0.8 + 0.1
    twice = torch.cat([rgb, rgb], dim=1)  # the same image in both fields
    jittered = hed_jitter(twice, 0.2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(jittered[:, :3], jittered[:, 3:])
    alone = hed_jitter(rgb, 0.2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(jittered[:, :3], alone)  # one field: the draws of one image
    assert (alone - rgb).abs().mean() > 1e-3


def test_the_geometric_transform_moves_both_fields_alike(stacked):
    same = torch.cat([stacked[..., :3], stacked[..., :3]], dim=-1)
    torch.manual_seed(2)
    moved = Plain(geometric=True)(torch.arange(10), same, torch.zeros(10, 2)).inputs
    torch.testing.assert_close(moved[:, :3], moved[:, 3:])
    assert not torch.allclose(moved[:, :3], to_float(same[..., :3].contiguous()))
