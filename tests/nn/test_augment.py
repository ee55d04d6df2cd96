from __future__ import annotations

import pytest
import torch

from stmix.nn import CandidateSampler, Mix, Plain, UniformSampler, snr_loss
from stmix.nn.augment import Step
from stmix.nn.constants import LOSS_WEIGHTS
from stmix.nn.geometric import flip_rotate_crop
from stmix.nn.images import to_float, to_input


@pytest.fixture
def bank():
    torch.manual_seed(0)
    patches = torch.randint(0, 256, (10, 8, 8, 3), dtype=torch.uint8)
    targets = torch.randn(10, 5)
    return patches, targets


def test_plain_steps(bank):
    patches, targets = bank
    anchors = torch.tensor([1, 4, 7])
    step = Plain()(anchors, patches, targets)
    torch.testing.assert_close(step.inputs, patches[anchors].permute(0, 3, 1, 2).float() / 255)
    losses = step.loss(torch.zeros(3, 5))
    assert set(losses) == {"total", "mse"}
    assert losses["total"].item() == pytest.approx(targets[anchors].square().mean().item())
    assert Plain(geometric=True)(anchors, patches, targets).inputs.shape == (3, 3, 8, 8)


def test_mix_step_stacks_mixed_anchor_partner(bank):
    patches, targets = bank
    sampler = CandidateSampler.from_csr(
        torch.arange(0, 11).numpy(), ((torch.arange(10) + 1) % 10).numpy()
    )
    anchors = torch.tensor([0, 3, 5, 9])
    torch.manual_seed(1)
    step = Mix(sampler)(anchors, patches, targets)
    partners = (anchors + 1) % 10
    x_i = patches[anchors].permute(0, 3, 1, 2).float() / 255
    x_j = patches[partners].permute(0, 3, 1, 2).float() / 255
    lam = step.lam.view(-1, 1, 1, 1)
    torch.testing.assert_close(step.inputs[:4], lam * x_i + (1 - lam) * x_j)
    torch.testing.assert_close(step.inputs[4:8], x_i)
    torch.testing.assert_close(step.inputs[8:], x_j)
    torch.testing.assert_close(step.y_j, targets[partners])
    pred = torch.randn(12, 5)
    losses = step.loss(pred)
    expected = snr_loss(
        pred[:4],
        pred[4:8],
        pred[8:],
        targets[anchors],
        targets[partners],
        step.lam,
        step.edge_weight,
    )
    assert losses["total"].item() == pytest.approx(expected["total"].item())


def test_cutmix_and_loss_weights(bank):
    patches, targets = bank
    mix = Mix(UniformSampler(10), boxes=True, loss_weights={"edge": 0.0})
    step = mix(torch.arange(6), patches, targets)
    assert step.inputs.shape == (18, 3, 8, 8)
    assert step.loss_weights == {"consistency": 0.5, "edge": 0.0, "correlation": 0.05}
    # the box pixels come from the partner
    assert ((step.inputs[:6] == step.inputs[6:12]) | (step.inputs[:6] == step.inputs[12:])).all()


def test_the_mixing_loss_gets_the_step_weights_ratios_and_edges(bank):
    patches, targets = bank
    weights = {"consistency": 2.0, "edge": 3.0, "correlation": 0.7}
    sampler = CandidateSampler.from_csr(
        torch.arange(0, 11).numpy(), ((torch.arange(10) + 1) % 10).numpy(), edge=torch.arange(10.0)
    )
    anchors = torch.tensor([2, 6, 8])
    torch.manual_seed(3)
    step = Mix(sampler, loss_weights=weights)(anchors, patches, targets)
    assert step.partners.tolist() == [3, 7, 9] and step.edge_weight.tolist() == [2.0, 6.0, 8.0]
    pred = torch.randn(9, 5).to(torch.bfloat16)
    got = step.loss(pred)
    p = pred.float()
    expected = snr_loss(
        p[:3],
        p[3:6],
        p[6:],
        targets[anchors],
        targets[anchors + 1],
        step.lam,
        step.edge_weight,
        **weights,
    )
    assert list(got) == list(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])
    assert got["total"].dtype == torch.float32


def test_a_step_owns_its_default_loss_weights(bank):
    patches, targets = bank
    first, second = Step(patches, targets), Step(patches, targets)
    assert first.loss_weights == dict(LOSS_WEIGHTS)
    first.loss_weights["edge"] = 0.0
    assert second.loss_weights["edge"] == LOSS_WEIGHTS["edge"]
    mix = Mix(UniformSampler(10), loss_weights={"correlation": 0.0})
    assert mix.loss_weights == {**LOSS_WEIGHTS, "correlation": 0.0}


@pytest.mark.parametrize(("alpha", "low", "high"), [(0.05, 0.0, 0.2), (50.0, 0.85, 1.0)])
def test_alpha_reaches_the_mixing_ratios(bank, alpha, low, high):
    """Beta(0.05, 0.05) puts the ratios near 0 or 1; Beta(50, 50) near 0.5."""
    patches, targets = bank
    torch.manual_seed(0)
    step = Mix(UniformSampler(10), alpha=alpha)(torch.arange(10).repeat(100), patches, targets)
    near_half = ((step.lam - 0.5).abs() < 0.1).float().mean().item()
    assert low <= near_half <= high


def test_embeddings_mix_as_vectors_and_refuse_pixel_methods():
    torch.manual_seed(0)
    vectors, targets = torch.randn(10, 6, dtype=torch.float64), torch.randn(10, 2)
    anchors = torch.arange(4)
    step = Mix(UniformSampler(10))(anchors, vectors, targets)
    x_i, x_j = vectors[anchors].float(), vectors[step.partners].float()
    lam = step.lam[:, None]
    assert step.inputs.dtype == torch.float32 and step.inputs.shape == (12, 6)
    torch.testing.assert_close(step.inputs, torch.cat([lam * x_i + (1 - lam) * x_j, x_i, x_j]))
    plain = Plain()(anchors, vectors, targets)
    torch.testing.assert_close(plain.inputs, x_i)
    with pytest.raises(ValueError, match="augment='cutmix' pastes boxes"):
        Mix(UniformSampler(10), boxes=True)(anchors, vectors, targets)
    with pytest.raises(ValueError, match="augment='basic' flips and crops images"):
        Plain(geometric=True)(anchors, vectors, targets)


def test_basic_is_the_geometric_transform_of_the_anchors(bank):
    patches, targets = bank
    anchors = torch.tensor([0, 5])
    torch.manual_seed(4)
    step = Plain(geometric=True)(anchors, patches, targets)
    torch.manual_seed(4)
    expected = flip_rotate_crop(to_float(patches[anchors]))
    torch.testing.assert_close(step.inputs, expected)
    assert not torch.equal(step.inputs, to_float(patches[anchors]))
    torch.testing.assert_close(step.y_i, targets[anchors])


def test_moving_keeps_every_setting():
    plain = Plain(geometric=True)
    assert plain.to("cpu") is plain
    mix = Mix(UniformSampler(10), alpha=0.4, boxes=True, loss_weights={"edge": 1.0})
    moved = mix.to("cpu")
    assert isinstance(moved, Mix) and moved is not mix
    assert (moved.alpha, moved.boxes, moved.loss_weights) == (0.4, True, mix.loss_weights)
    assert isinstance(moved.sampler, UniformSampler) and moved.sampler.n == 10
    assert Mix(UniformSampler(10)).alpha == 1.0  # the default: uniform ratios


def test_patches_become_float_images_in_zero_to_one():
    patches = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)  # one 1 × 1 image
    out = to_float(patches)
    assert out.shape == (1, 3, 1, 1) and out.dtype == torch.float32
    assert out.flatten().tolist() == pytest.approx([0.0, 128 / 255, 1.0], rel=1e-7)
    wide = torch.zeros(2, 4, 5, 3, dtype=torch.uint8)
    assert to_float(wide).is_contiguous(memory_format=torch.channels_last)
    for bad in (wide.float(), wide[0], wide[..., :2]):
        with pytest.raises(ValueError, match="must be uint8 \\(N, H, W, 3\\)"):
            to_float(bad)
    assert to_input(torch.ones(2, 3, dtype=torch.float64)).dtype == torch.float32
