"""Per-epoch training history: rows, as models keep it, to columns, as AnnData stores it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def columns(rows: Sequence[dict]) -> dict[str, np.ndarray]:
    """One array per key, in first-seen order; NaN where a row lacks the key."""
    keys = dict.fromkeys(key for row in rows for key in row)
    return {key: np.array([row.get(key, np.nan) for row in rows]) for key in keys}
