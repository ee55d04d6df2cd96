"""A head that predicts expression from a fixed embedding (the frozen-encoder path)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stmix.nn.constants import HEAD_NETWORKS


class ExpressionHead(nn.Module):
    """Predict the expression of ``n_genes`` genes from an embedding.

    The embedding is standardised with ``center`` and ``scale`` (the training spots' mean and
    standard deviation, stored as buffers) and held within ``low`` and ``high`` (the range the
    training spots span after standardising), then mapped by a linear layer (``"linear"``, the
    linear probe) or a one-hidden-layer MLP (``"mlp"``); ``offset`` is added to the output (the
    mean training expression for the delta target, else zeros). The last layer starts at zero,
    so the untrained head predicts ``offset`` (for the delta target: the training mean).

    Why the range: with a few dozen training spots, a feature can be nearly constant on them
    (a standard deviation of 1e-6 where the others have 0.1) and large on a new spot, which
    standardising turns into tens of thousands of standard deviations, and the prediction with
    it. A head cannot have learnt anything beyond the values it was trained on, so a new spot's
    feature is clipped to them.

    Parameters
    ----------
    in_features
        Length of the embedding.
    n_genes
        Number of outputs.
    kind
        ``"linear"`` or ``"mlp"``.
    hidden
        Width of the MLP's hidden layer.
    dropout
        Dropout on the standardised embedding (and in the MLP).
    center, scale, offset
        (in_features,), (in_features,) and (n_genes,) tensors; default 0, 1 and 0.
    low, high
        (in_features,) bounds of the standardised embedding; default -inf and inf (no bound).
    """

    def __init__(
        self,
        in_features: int,
        n_genes: int,
        *,
        kind: str = "linear",
        hidden: int = 256,
        dropout: float = 0.2,
        center: Tensor | None = None,
        scale: Tensor | None = None,
        offset: Tensor | None = None,
        low: Tensor | None = None,
        high: Tensor | None = None,
    ):
        super().__init__()
        if kind not in HEAD_NETWORKS:
            raise ValueError(f"`kind` must be one of {list(HEAD_NETWORKS)}, not {kind!r}.")
        self.kind = kind
        self.dropout = nn.Dropout(dropout)
        if kind == "linear":
            self.head = nn.Linear(in_features, n_genes)
        else:
            self.head = nn.Sequential(
                nn.Linear(in_features, hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, n_genes),
            )

        last = self.head if kind == "linear" else self.head[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

        def vector(value, size, fill):
            value = torch.full((size,), fill) if value is None else torch.as_tensor(value).float()
            if value.shape != (size,):
                raise ValueError(f"expected a vector of length {size}, not {tuple(value.shape)}.")
            return value.clone()

        self.register_buffer("center", vector(center, in_features, 0.0))
        self.register_buffer("scale", vector(scale, in_features, 1.0))
        self.register_buffer("offset", vector(offset, n_genes, 0.0))
        self.register_buffer("low", vector(low, in_features, -torch.inf))
        self.register_buffer("high", vector(high, in_features, torch.inf))
        if bool((self.low > self.high).any()):
            raise ValueError("`low` must not exceed `high`.")
        self.register_load_state_dict_pre_hook(_unbounded_if_missing)

    @property
    def out_features(self) -> int:
        """Number of genes."""
        return int(self.offset.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        """Expression (N, n_genes) of embeddings (N, in_features)."""
        z = (x.float() - self.center) / self.scale
        z = torch.minimum(torch.maximum(z, self.low), self.high)
        return self.head(self.dropout(z)) + self.offset


def _unbounded_if_missing(module, state_dict, prefix, *args) -> None:
    """A saved head without ``low`` / ``high`` buffers loads unbounded (the range is not known)."""
    for name, fill in (("low", -torch.inf), ("high", torch.inf)):
        if prefix + name not in state_dict and prefix + "center" in state_dict:
            state_dict[prefix + name] = torch.full_like(state_dict[prefix + "center"], fill)
