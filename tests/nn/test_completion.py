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
