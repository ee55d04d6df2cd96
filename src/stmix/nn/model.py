"""The image-to-expression network: an encoder (timm backbone), dropout and one linear head."""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from stmix.nn.constants import DEFAULT_BACKBONE
from stmix.nn.encoder import Encoder


class ExpressionPredictor(nn.Module):
    """Predict the expression of ``n_genes`` genes from an H&E patch.

    The network composes an :class:`~stmix.nn.Encoder` (``encoder``: the timm backbone, which
    normalises float images (N, 3, H, W) in [0, 1] with its pretrained mean and standard
    deviation itself, so callers never need to know them) and a head: the output is
    ``head(dropout(features)) + offset``. With ``offset`` the mean training expression, the
    network learns the deviation from the mean (the ViT+Δ baseline); with zeros (the default),
    the expression itself. As in timm, ``forward`` is ``forward_head(forward_features(x))``,
    and :meth:`embed` gives the encoder's features.

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
    fields
        Fields of view per input (the spot's and ``fields - 1`` wider ones).
    """

    def __init__(
        self,
        n_genes: int,
        backbone: str = DEFAULT_BACKBONE,
        *,
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
        dropout: float = 0.2,
        offset: Tensor | None = None,
        img_size: int | None = None,
        backbone_kwargs: dict | None = None,
        fields: int = 1,
    ):
        super().__init__()
        if int(fields) < 1:
            raise ValueError(f"fields must be at least 1, not {fields}.")
        self.fields = int(fields)
        self.encoder = Encoder(
            backbone,
            pretrained=pretrained,
            weights=weights,
            img_size=img_size,
            backbone_kwargs=backbone_kwargs,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features * self.fields, n_genes)
        offset = torch.zeros(n_genes) if offset is None else torch.as_tensor(offset).float()
        if offset.shape != (n_genes,):
            raise ValueError(f"offset must have shape ({n_genes},), not {tuple(offset.shape)}.")
        self.register_buffer("offset", offset.clone())
        self.register_load_state_dict_pre_hook(_encoder_keys)

    @property
    def backbone(self) -> nn.Module:
        """The timm backbone (without the normalisation)."""
        return self.encoder.backbone

    @property
    def weights_source(self) -> str:
        """Where the backbone's starting weights came from."""
        return self.encoder.weights_source

    @property
    def num_features(self) -> int:
        """Length of the encoder's feature vector (for one field of view)."""
        return self.encoder.num_features

    def forward_features(self, x: Tensor) -> Tensor:
        """Features (N, num_features * fields) of float images (N, 3 * fields, H, W) in [0, 1].

        Each field's encoder features, concatenated in the order of the channels.
        """
        if self.fields == 1:
            return self.encoder.forward_features(x)
        n, channels, height, width = x.shape
        if channels != 3 * self.fields:
            raise ValueError(
                f"The network reads {self.fields} fields of view, (N, {3 * self.fields}, H, W) "
                f"images, not {tuple(x.shape)}."
            )
        each = x.reshape(n * self.fields, 3, height, width)
        return self.encoder.forward_features(each).reshape(n, -1)

    def forward_head(self, features: Tensor, *, pre_logits: bool = False) -> Tensor:
        """Expression (N, n_genes) from features; ``pre_logits``: the features, as timm's."""
        if pre_logits:
            return features
        return self.head(self.dropout(features)) + self.offset

    def forward(self, x: Tensor) -> Tensor:
        """Expression (N, n_genes) of float images (N, 3, H, W) in [0, 1]."""
        return self.forward_head(self.forward_features(x))

    def embed(self, x: Tensor, *, size: int | None = None, tta: int = 1) -> Tensor:
        """The encoder's features (see :meth:`~stmix.nn.Encoder.embed`), not predictions."""
        return self.encoder.embed(x, size=size, tta=tta)


def _encoder_keys(module, state_dict, prefix, *args) -> None:
    """Weights saved when the encoder's parts sat on the predictor itself load into ``encoder``."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        name = key[len(prefix) :]
        if name in ("mean", "std") or name.startswith("backbone."):
            state_dict[f"{prefix}encoder.{name}"] = state_dict.pop(key)
