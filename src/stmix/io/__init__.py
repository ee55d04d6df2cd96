"""Other containers in and out: SpatialData (``pip install "stmix[spatialdata]"``)."""

from stmix.io._from_spatialdata import from_spatialdata
from stmix.io._to_spatialdata import to_spatialdata

__all__ = ["from_spatialdata", "to_spatialdata"]
