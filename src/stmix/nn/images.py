"""From stored patches to network input."""

from __future__ import annotations

import torch
from torch import Tensor


def to_float(patches: Tensor) -> Tensor:
    """uint8 patches (N, H, W, 3) to float images (N, 3, H, W) in [0, 1].

    Patches of several fields of view stacked along the channels (N, H, W, 3k) become
    (N, 3k, H, W), the fields in the same order (:class:`~stmix.nn.ExpressionPredictor`'s
    ``fields``). The result is a channels-last view of the same memory layout (no transposing
    copy), the layout convolutions run fastest in on CUDA.
    """
    if patches.dtype != torch.uint8 or patches.ndim != 4 or patches.shape[-1] % 3:
        raise ValueError(
            f"patches must be uint8 (N, H, W, 3), or (N, H, W, 3k) for k fields of view, not "
            f"{patches.dtype} {tuple(patches.shape)}."
        )
    return patches.permute(0, 3, 1, 2).float().div_(255.0)


def to_input(x: Tensor) -> Tensor:
    """Network input from stored data: uint8 patches become float images, vectors stay."""
    return to_float(x) if x.dtype == torch.uint8 else x.float()
