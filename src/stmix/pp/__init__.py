"""Preparation: AnnData in, AnnData out (no torch)."""

from __future__ import annotations

import warnings
from typing import Any

from stmix.pp._aggregate import aggregate
from stmix.pp._concat import concat
from stmix.pp._genes import select_genes
from stmix.pp._neighbors import neighbors
from stmix.pp._patches import patches
from stmix.pp._split import split
from stmix.pp._stain import normalize_stain
from stmix.pp._tile import tile

__all__ = [
    "aggregate",
    "concat",
    "neighbors",
    "normalize_stain",
    "patches",
    "select_genes",
    "split",
    "tile",
]


def __getattr__(name: str) -> Any:
    # completion trains a network, so it lives in tl (pp never imports torch); the old name
    # forwards there with a FutureWarning
    if name == "complete":
        warnings.warn(
            "stmix.pp.complete moved to stmix.tl.complete; the old name will be removed.",
            FutureWarning,
            stacklevel=2,
        )
        from stmix.tl import complete

        return complete
    raise AttributeError(f"module 'stmix.pp' has no attribute {name!r}")
