"""The image-to-expression network: an encoder (timm backbone), dropout and one linear head."""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from stmix.nn.encoder import Encoder


class ExpressionPredictor(Encoder):
    """Predict the expression of ``n_genes`` genes from an H&E patch.

    ``forward`` takes float images (N, 3, H, W) in [0, 1] and normalises them with the
    backbone's pretrained mean and standard deviation itself (:class:`~stmix.nn.Encoder`), so
    callers never need to know them. The output is ``head(dropout(features(x))) + offset``: with
    ``offset`` the mean training expression, the network learns the deviation from the mean (the
    ViT+Δ baseline); with zeros (the default), the expression itself. As in timm, ``forward``
    is ``forward_head(forward_features(x))``, and :meth:`embed` gives the features.

    Parameters
    ----------
    n_genes
        Number of outputs.
    backbone
        Any timm model name.
    pretrained
        Start from pretrained weights (see :func:`~stmix.nn.backbone.create_backbone`).
    weights
        A local weights file for the backbone, instead of downloading.
    dropout
        Dropout before the head (the paper: 0.2).
    offset
        Added to every output (n_genes,); default zeros.
    img_size
        Patch size, for backbones with a fixed input size (ViTs).
    backbone_kwargs
        Extra creation arguments of the backbone.
    """

    def __init__(
        self,
        n_genes: int,
        backbone: str = "tf_efficientnet_lite0",
        *,
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
        dropout: float = 0.2,
        offset: Tensor | None = None,
        img_size: int | None = None,
        backbone_kwargs: dict | None = None,
    ):
        super().__init__(
            backbone,
            pretrained=pretrained,
            weights=weights,
            img_size=img_size,
            backbone_kwargs=backbone_kwargs,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features, n_genes)
        offset = torch.zeros(n_genes) if offset is None else torch.as_tensor(offset).float()
        if offset.shape != (n_genes,):
            raise ValueError(f"offset must have shape ({n_genes},), not {tuple(offset.shape)}.")
        self.register_buffer("offset", offset.clone())

    def forward_head(self, features: Tensor, *, pre_logits: bool = False) -> Tensor:
        """Expression (N, n_genes) from features; ``pre_logits``: the features, as timm's."""
        if pre_logits:
            return features
        return self.head(self.dropout(features)) + self.offset

    def forward(self, x: Tensor) -> Tensor:
        """Expression (N, n_genes) of float images (N, 3, H, W) in [0, 1]."""
        return self.forward_head(self.forward_features(x))
