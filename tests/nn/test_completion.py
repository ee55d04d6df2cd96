"""The neighbourhood transformer's architecture, as documented."""

from __future__ import annotations

import warnings

import torch

from stmix.nn import NeighbourhoodTransformer


def _n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_the_default_architecture():
    genes, rings = 10, 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no notice about nested tensors or anything else
        model = NeighbourhoodTransformer(genes, rings)
    d = 128
    assert model.embed.in_features == 2 * genes and model.embed.out_features == d
    assert model.ring.num_embeddings == rings + 1
    assert len(model.encoder.layers) == 2
    for layer in model.encoder.layers:
        assert layer.self_attn.num_heads == 4 and layer.self_attn.embed_dim == d
        assert layer.linear1.out_features == 2 * d
        assert layer.norm_first and layer.dropout.p == 0.1
    per_layer = 4 * d * d + 4 * d + 2 * (d * 2 * d) + 2 * d + d + 4 * d  # attention, MLP, norms
    expected = (2 * genes * d + d) + (rings + 1) * d + 2 * per_layer + 2 * d + (d * genes + genes)
    assert _n_parameters(model) == expected + 2 * genes  # and the gene-wise recalibration


def test_dropout_reaches_every_layer():
    model = NeighbourhoodTransformer(4, 1, d_model=16, n_heads=2, dropout=0.0)
    assert all(layer.dropout.p == 0.0 for layer in model.encoder.layers)


def _trained_looking(genes: int = 5, rings: int = 2, seed: int = 0) -> NeighbourhoodTransformer:
    """A small model with a non-zero head (as after training), in eval mode."""
    torch.manual_seed(seed)
    model = NeighbourhoodTransformer(genes, rings, d_model=16, n_heads=2, n_layers=1).eval()
    torch.nn.init.normal_(model.head.weight)
    torch.nn.init.normal_(model.head.bias)
    return model


def _tokens(batch: int, tokens: int, genes: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(batch, tokens, genes, generator=g)
    missing = torch.rand(batch, tokens, genes, generator=g) < 0.3
    ring = torch.randint(1, 3, (batch, tokens), generator=g)
    ring[:, 0] = 0
    return values, missing, ring, torch.rand(batch, genes, generator=g)


def test_padding_tokens_change_nothing():
    model = _trained_looking()
    values, missing, ring, baseline = _tokens(3, 4, 5)
    unpadded = model(values, missing, ring, torch.zeros(3, 4, dtype=torch.bool), baseline)
    # two more tokens per spot, marked as padding, holding anything
    extra = torch.full((3, 2, 5), 9.0)
    padded = model(
        torch.cat([values, extra], 1),
        torch.cat([missing, torch.ones(3, 2, 5, dtype=torch.bool)], 1),
        torch.cat([ring, torch.ones(3, 2, dtype=torch.long)], 1),
        torch.cat([torch.zeros(3, 4, dtype=torch.bool), torch.ones(3, 2, dtype=torch.bool)], 1),
        baseline,
    )
    torch.testing.assert_close(padded, unpadded)


def test_the_order_of_the_neighbours_changes_nothing():
    """Only the ring tells tokens apart: the prediction is the centre's, whatever the order."""
    model = _trained_looking()
    values, missing, ring, baseline = _tokens(3, 5, 5)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    order = torch.tensor([0, 3, 1, 4, 2])
    torch.testing.assert_close(
        model(values[:, order], missing[:, order], ring[:, order], pad, baseline),
        model(values, missing, ring, pad, baseline),
    )


def test_the_head_adds_a_correction_to_the_recalibrated_baseline():
    model = NeighbourhoodTransformer(3, 1, d_model=8, n_heads=2, n_layers=1).eval()
    values, missing, ring, baseline = _tokens(2, 3, 3)
    ring = ring.clamp(max=1)
    pad = torch.zeros(2, 3, dtype=torch.bool)
    with torch.no_grad():
        model.gene_scale.fill_(1.0)  # baseline × 2
        model.gene_shift.fill_(0.5)
        model.head.bias.copy_(torch.tensor([1.0, -2.0, 3.0]))  # weight stays zero
    expected = 2 * baseline + 0.5 + torch.tensor([1.0, -2.0, 3.0])
    torch.testing.assert_close(model(values, missing, ring, pad, baseline), expected)
