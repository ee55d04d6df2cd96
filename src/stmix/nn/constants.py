"""The names of the augmentation methods and the default loss weights, importable without torch.

The command line lists them in its ``--help`` and the training presets check against them, both
without loading PyTorch.
"""

from __future__ import annotations

from types import MappingProxyType

#: Every method, in the order the paper's tables list them.
METHODS: tuple[str, ...] = ("none", "basic", "mixup", "cutmix", "cmixup", "knn", "snr")
#: The methods that mix a spot with a partner (and train with the composite loss).
MIXING: tuple[str, ...] = ("mixup", "cutmix", "cmixup", "knn", "snr")
#: The methods that need pixels (they cannot run on embeddings).
PIXEL: tuple[str, ...] = ("basic", "cutmix")
#: Default weights of the consistency, edge and correlation terms (the paper's); read-only.
LOSS_WEIGHTS = MappingProxyType({"consistency": 0.5, "edge": 50.0, "correlation": 0.05})
