"""Pure PyTorch: partner samplers, image mixing, the SNR-ST-Mix loss, the networks.

Nothing here imports AnnData, so the mixer and the loss drop into any PyTorch training code.
Names load on first use (``import stmix.nn`` alone does not import torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> module of this package that defines it.
_EXPORTS = {
    "LOSS_WEIGHTS": "constants",
    "METHODS": "constants",
    "MIXING": "constants",
    "Augmentation": "augment",
    "Mix": "augment",
    "Plain": "augment",
    "Step": "augment",
    "CandidateSampler": "sampling",
    "DenseSampler": "sampling",
    "PartnerSampler": "sampling",
    "UniformSampler": "sampling",
    "ExpressionPredictor": "model",
    "ExpressionHead": "head",
    "Encoder": "encoder",
    "NeighbourhoodTransformer": "completion",
    "cutmix": "mixing",
    "flip_rotate_crop": "geometric",
    "mix_pixels": "mixing",
    "mse_loss": "loss",
    "pearson_loss": "loss",
    "sample_lambda": "mixing",
    "snr_loss": "loss",
    "to_float": "images",
    "to_input": "images",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stmix.nn' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"stmix.nn.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load on first use
    from stmix.nn.augment import Augmentation, Mix, Plain, Step  # noqa: F401
    from stmix.nn.completion import NeighbourhoodTransformer  # noqa: F401
    from stmix.nn.constants import LOSS_WEIGHTS, METHODS, MIXING  # noqa: F401
    from stmix.nn.encoder import Encoder  # noqa: F401
    from stmix.nn.geometric import flip_rotate_crop  # noqa: F401
    from stmix.nn.head import ExpressionHead  # noqa: F401
    from stmix.nn.images import to_float, to_input  # noqa: F401
    from stmix.nn.loss import mse_loss, pearson_loss, snr_loss  # noqa: F401
    from stmix.nn.mixing import cutmix, mix_pixels, sample_lambda  # noqa: F401
    from stmix.nn.model import ExpressionPredictor  # noqa: F401
    from stmix.nn.sampling import (  # noqa: F401
        CandidateSampler,
        DenseSampler,
        PartnerSampler,
        UniformSampler,
    )
