"""timm models published on the Hugging Face hub (``hf-hub:<org>/<name>``), cache first.

The pathology foundation encoders (UNI, H-optimus, Virchow, Prov-GigaPath ...) are timm models on
the hub. A model already in the local hub cache is built from the cached snapshot folder
(timm's ``local-dir:`` source): no network call is made. Otherwise it is downloaded through timm,
and the usual failures get messages in a user's words: a gated model needs its licence accepted
and a token, an unknown name is not reported as missing weights, and without a network the call
fails within seconds and names ``weights=``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import timm
from torch import nn

from stmix import _options
from stmix.errors import UnavailableError

PREFIX = "hf-hub:"
#: Weight files a timm model folder may hold, in timm's order of preference.
WEIGHT_FILES = ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin")


def is_hub_name(name: str) -> bool:
    """Whether ``name`` names a hub model (``hf-hub:<org>/<name>[@revision]``)."""
    return name.startswith(PREFIX)


def split(name: str) -> tuple[str, str | None]:
    """``(repo_id, revision)`` of a hub name."""
    repo = name[len(PREFIX) :]
    repo, _, revision = repo.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"{name!r} is not a hub name of the form 'hf-hub:<org>/<name>'.")
    return repo, revision or None


def cache_dir() -> Path:
    """The hub cache as the environment names it now (``HF_HUB_CACHE``, ``HF_HOME``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = (
        os.environ.get("HF_HOME")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    )
    return Path(home) / "hub"


def cached_snapshot(name: str) -> Path | None:
    """The cached snapshot folder of ``name`` holding ``config.json`` and a weights file."""
    from huggingface_hub import try_to_load_from_cache

    repo, revision = split(name)
    found = try_to_load_from_cache(repo, "config.json", cache_dir=cache_dir(), revision=revision)
    if not isinstance(found, str):
        return None
    folder = Path(found).parent
    return folder if any((folder / f).is_file() for f in WEIGHT_FILES) else None


def config(name: str, snapshot: Path | None) -> dict[str, Any]:
    """The model's ``config.json``: from the cache, else downloaded."""
    if snapshot is not None:
        path = snapshot / "config.json"
    else:
        from huggingface_hub import hf_hub_download

        repo, revision = split(name)
        path = hf_hub_download(repo, "config.json", revision=revision, cache_dir=cache_dir())
    return json.loads(Path(path).read_text())


def create(
    name: str, *, pretrained: bool, img_size: int | None, kwargs: dict[str, Any], online: bool
) -> tuple[nn.Module, str]:
    """The hub model without classifier, and where its weights came from.

    ``online`` says whether the hub can be reached (checked by the caller, quickly).
    """
    snapshot = cached_snapshot(name)
    repo, _ = split(name)
    if snapshot is None and not online:
        raise UnavailableError(
            f"Cannot build {name!r}: it is not in the local hub cache ({cache_dir()}) and the "
            f"hub cannot be reached (no network?). Download it once where there is a network "
            f"(it is then cached), or pass a local weights file with {_options.arg('weights')} "
            f"(the architecture still comes from the cached config.json)."
        )
    with _hub_errors(name, snapshot):
        cfg = config(name, snapshot)
        pretrained_cfg = cfg.get("pretrained_cfg") or {}
        if img_size is not None and pretrained_cfg.get("fixed_input_size"):
            kwargs = {"img_size": img_size, **kwargs}
        source = f"local-dir:{snapshot}" if snapshot is not None else name
        model = timm.create_model(source, pretrained=pretrained, num_classes=0, **kwargs)
    model.pretrained_cfg = {**model.pretrained_cfg, **pretrained_cfg, "hf_hub_id": repo}
    if not pretrained:
        return model, "random initialisation"
    return model, f"hub cache {repo}" if snapshot is not None else f"huggingface.co download {repo}"


@contextlib.contextmanager
def _hub_errors(name: str, snapshot: Path | None) -> Iterator[None]:
    """Turn the hub's and timm's exceptions into messages about the model."""
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError
    from safetensors import SafetensorError

    repo, _ = split(name)
    page = f"https://huggingface.co/{repo}"
    try:
        yield
    except GatedRepoError:
        raise UnavailableError(
            f"{name!r} is gated: accept its licence on {page} with your account, then log in "
            f"here (`huggingface-cli login`, or set HF_TOKEN)."
        ) from None
    except RepositoryNotFoundError:
        raise ValueError(
            f"There is no model {repo!r} on the Hugging Face hub (or it is private and you are "
            f"not logged in): check the name on {page}."
        ) from None
    except EntryNotFoundError:
        raise ValueError(
            f"{repo!r} on the hub has no timm config.json or weights: it is not a timm model "
            f"(transformers or open_clip models need their own loaders)."
        ) from None
    except TypeError as error:
        raise ValueError(
            f"{name!r} does not accept these creation arguments: {error}. Check "
            f"`backbone_kwargs` against the model card."
        ) from None
    except (SafetensorError, EOFError) as error:
        raise ValueError(
            f"The cached weights of {name!r} in {snapshot or cache_dir()} cannot be read "
            f"({error}); the download was cut short: delete that folder and download the "
            f"model again."
        ) from None


def resolve_kwargs(kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Creation arguments, with classes given by import path (``"timm.layers.SwiGLUPacked"``).

    Paths keep ``backbone_kwargs`` JSON-friendly, so a model's config can record them and
    :func:`stmix.tl.load` can rebuild the same network.
    """
    import importlib

    out = {}
    for key, value in (kwargs or {}).items():
        if isinstance(value, str) and key.endswith("_layer") and "." in value:
            module, _, attr = value.rpartition(".")
            try:
                value = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError):
                raise ValueError(
                    f"backbone_kwargs[{key!r}] = {value!r} names no importable class."
                ) from None
        out[key] = value
    return out


def record_kwargs(kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``backbone_kwargs`` as JSON, for a model's config.

    Layer classes (and timm's partials such as ``timm.layers.SwiGLUPacked``) are recorded by
    import path, which :func:`resolve_kwargs` turns back into them.
    """
    import inspect

    import torch

    out = {}
    for key, value in (kwargs or {}).items():
        if value is None or isinstance(value, (str, bool, int, float)):
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(
            isinstance(v, (str, bool, int, float)) for v in value
        ):
            out[key] = list(value)
        elif inspect.isclass(value):
            out[key] = f"{value.__module__}.{value.__qualname__}"
        elif callable(value):  # timm's partials (SwiGLUPacked): found by identity
            named = [
                f"{module.__name__}.{attr}"
                for module in (timm.layers, torch.nn)
                for attr in dir(module)
                if getattr(module, attr, None) is value
            ]
            if not named:
                raise ValueError(
                    f"backbone_kwargs[{key!r}] = {value!r} cannot be recorded in the model's "
                    f"config: give it by its import path (e.g. 'timm.layers.SwiGLUPacked')."
                )
            out[key] = named[0]
        else:
            raise ValueError(
                f"backbone_kwargs[{key!r}] = {value!r} cannot be recorded in the model's config: "
                f"use numbers, strings or layer classes."
            )
    return out
