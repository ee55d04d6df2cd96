"""How much a network's prediction moves under its own dropout: a per-spot, per-gene spread."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def dropout_std(head: nn.Module, features: Tensor, p: float, *, passes: int = 16) -> Tensor:
    """Standard deviation of ``head(dropout(features))`` over dropout masks, (n, genes).

    For a linear head it is exact, with no sampling: dropout keeps feature j with probability
    1 - p and scales it by 1 / (1 - p), so output g has variance
    p / (1 - p) · Σ_j W_gj² f_j². Otherwise (an MLP, with dropout inside too) ``passes``
    masks are drawn (MC dropout). With ``p == 0`` the spread is zero.
    """
    if p == 0:
        return features.new_zeros((features.shape[0], _out_features(head)), dtype=torch.float32)
    features = features.float()
    if isinstance(head, nn.Linear):
        variance = (p / (1 - p)) * (features**2) @ (head.weight.float() ** 2).T
        return variance.clamp_min(0).sqrt()
    was_training = head.training
    head.train()
    try:
        samples = torch.stack(
            [head(F.dropout(features, p, training=True)).float() for _ in range(passes)]
        )
    finally:
        head.train(was_training)
    return samples.std(dim=0)


def _out_features(head: nn.Module) -> int:
    """The width of the head's last linear layer (a linear head is its own last layer)."""
    last = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    return int(last.out_features)
