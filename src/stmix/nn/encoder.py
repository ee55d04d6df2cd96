"""A frozen or trainable image encoder: a timm backbone that normalises its own input."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stmix.nn.backbone import create_backbone
from stmix.nn.constants import DEFAULT_BACKBONE

#: The eight right-angle rotations and flips of a square patch (an H&E patch has no orientation).
DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


class Encoder(nn.Module):
    """Pooled features of float images (N, 3, H, W) in [0, 1].

    The images are normalised with the backbone's own mean and standard deviation (its pretrained
    configuration), so callers never need to know them.

    Parameters
    ----------
    backbone
        Any timm model name.
    pretrained
        Start from pretrained weights (see :func:`~stmix.nn.backbone.create_backbone`).
    weights
        A local weights file for the backbone, instead of downloading.
    img_size
        Input size, for backbones with a fixed input size (ViTs).
    backbone_kwargs
        Extra creation arguments of the backbone (see :func:`~stmix.nn.backbone.create_backbone`).
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        *,
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
        img_size: int | None = None,
        backbone_kwargs: dict | None = None,
    ):
        super().__init__()
        self.backbone, self.weights_source = create_backbone(
            backbone,
            pretrained=pretrained,
            weights=weights,
            img_size=img_size,
            backbone_kwargs=backbone_kwargs,
        )
        cfg = self.backbone.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.5,) * 3)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.5,) * 3)).view(1, 3, 1, 1))

    @property
    def input_size(self) -> int | None:
        """The side of the images the backbone was trained on (its configuration)."""
        size = (self.backbone.pretrained_cfg or {}).get("input_size")
        return int(size[-1]) if size else None

    @property
    def num_features(self) -> int:
        """Length of the feature vector."""
        return int(self.backbone.num_features)

    def forward_features(self, x: Tensor) -> Tensor:
        """Features (N, num_features) of float images (N, 3, H, W) in [0, 1]."""
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        """Features (N, num_features) of float images (N, 3, H, W) in [0, 1]."""
        return self.forward_features(x)

    def embed(self, x: Tensor, *, size: int | None = None, tta: int = 1) -> Tensor:
        """Features of images resized to ``size``, averaged over ``tta`` of the 8 dihedral views."""
        if size is not None and x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        views = []
        for k, flip in DIHEDRAL[:tta]:
            view = torch.flip(x, dims=(-1,)) if flip else x
            view = torch.rot90(view, k, dims=(-2, -1)) if k else view
            views.append(self.forward_features(view))
        return torch.stack(views).mean(0)
