"""Names the package agrees on, importable without torch: methods, heads, the default backbone.

The command line lists them in its ``--help``, and the training presets and the model files
check against them, all without loading PyTorch.
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
#: The timm backbone networks and encoders start from (small enough for a CPU).
DEFAULT_BACKBONE = "tf_efficientnet_lite0"
#: The networks a head on an embedding is (:class:`~stmix.nn.ExpressionHead`'s kinds).
HEAD_NETWORKS: tuple[str, ...] = ("linear", "mlp")
#: What ``tl.fit(head=)`` takes: those, and the ridge probe (a linear head solved in closed form).
HEADS: tuple[str, ...] = (*HEAD_NETWORKS, "ridge")
