"""Figures from AnnData (matplotlib; no torch)."""

from stmix.pl._gene_errors import gene_errors
from stmix.pl._history import history
from stmix.pl._maps import maps

__all__ = ["gene_errors", "history", "maps"]
