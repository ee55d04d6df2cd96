"""stmix: spatial gene expression from histology, with SNR-ST-Mix, on AnnData.

``import stmix`` is fast: the submodules load on first use, so neither torch nor matplotlib is
imported until a function that needs them runs (``stmix.pp`` needs neither).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("stmix")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

_SUBMODULES = ("datasets", "errors", "io", "nn", "pl", "pp", "tl")
__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"stmix.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'stmix' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from stmix import datasets, io, nn, pl, pp, tl  # noqa: F401
