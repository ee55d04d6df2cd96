from __future__ import annotations

import pytest
import torch

from stmix.nn import CandidateSampler, Mix, Plain, UniformSampler, snr_loss


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
