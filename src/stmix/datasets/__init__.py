"""Loaders that return spatial transcriptomics sections as AnnData: real (HER2ST) and synthetic."""

from stmix.datasets._her2st import SECTIONS as her2st_sections
from stmix.datasets._her2st import her2st
from stmix.datasets._hest import hest
from stmix.datasets._synthetic import synthetic
from stmix.datasets._visium import visium

__all__ = ["her2st", "her2st_sections", "hest", "synthetic", "visium"]
