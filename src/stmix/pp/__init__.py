"""Preparation: AnnData in, AnnData out (no torch)."""

from stmix.pp._complete import complete
from stmix.pp._genes import select_genes
from stmix.pp._neighbors import neighbors
from stmix.pp._patches import patches
from stmix.pp._split import split

__all__ = ["complete", "neighbors", "patches", "select_genes", "split"]
