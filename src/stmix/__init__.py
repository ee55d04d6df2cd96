"""stmix: spatial gene expression from histology, with SNR-ST-Mix, on AnnData."""

from importlib.metadata import PackageNotFoundError, version

from stmix import datasets, nn, pl, pp, tl

try:
    __version__ = version("stmix")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__", "datasets", "nn", "pl", "pp", "tl"]
