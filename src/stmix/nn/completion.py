"""The neighbourhood transformer that completes dropout values (SpaCKLE-style)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class NeighbourhoodTransformer(nn.Module):
    """Predict a spot's expression from its own and its neighbours' expression.

    Each spot of a neighbourhood is one token: its expression (genes), which of those entries
    are missing (genes), and its ring (0 for the centre spot). A transformer encoder mixes the
    tokens; the centre token's output gives a *correction* to a baseline (the adaptive
    median), so the untrained model (zero-initialised head) is the baseline itself.

    Parameters
    ----------
    n_genes
        Genes per spot.
    n_rings
        Largest ring index among the tokens.
    d_model, n_heads, n_layers
        Transformer width, attention heads and depth.
    dropout
        Dropout inside the encoder.
    """

    def __init__(
        self,
        n_genes: int,
        n_rings: int,
        *,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 2,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.embed = nn.Linear(2 * n_genes, d_model)
        self.ring = nn.Embedding(n_rings + 1, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            dim_feedforward=2 * d_model,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_genes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # gene-wise recalibration of the baseline: a d_model bottleneck cannot express per-gene
        # shrinkage of a noisy median, which matters most when few neighbours are observed
        self.gene_scale = nn.Parameter(torch.zeros(n_genes))
        self.gene_shift = nn.Parameter(torch.zeros(n_genes))

    def forward(
        self, values: Tensor, missing: Tensor, ring: Tensor, pad: Tensor, baseline: Tensor
    ) -> Tensor:
        """Expression of the centre spots (B, genes).

        ``values`` and ``missing`` are (B, tokens, genes), token 0 the centre; ``ring`` (B,
        tokens) long; ``pad`` (B, tokens) True for padding tokens; ``baseline`` (B, genes).
        """
        tokens = self.embed(torch.cat([values, missing.to(values.dtype)], dim=-1))
        hidden = self.encoder(tokens + self.ring(ring), src_key_padding_mask=pad)
        recalibrated = baseline * (1 + self.gene_scale) + self.gene_shift
        return recalibrated + self.head(self.norm(hidden[:, 0]))
