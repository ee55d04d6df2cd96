"""Loaders that return real spatial transcriptomics sections as AnnData."""

from stmix.datasets._her2st import SECTIONS as her2st_sections
from stmix.datasets._her2st import her2st

__all__ = ["her2st", "her2st_sections"]
