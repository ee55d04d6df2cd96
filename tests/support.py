"""What the tests share besides fixtures: where the data is, snapshots, training settings.

Importable from any test (``from tests.support import ...``); ``conftest.py`` holds the fixtures.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from scipy import sparse
from torch import nn

REPO = Path(__file__).resolve().parents[1]
#: Set explicitly, the folder must hold the data (a typo fails the run instead of skipping it).
DATA_GIVEN = bool(os.environ.get("STMIX_DATA_DIR"))
DATA = (
    Path(os.environ["STMIX_DATA_DIR"]).resolve() if DATA_GIVEN else REPO.parent / "shared" / "data"
)
FIXTURES = DATA.parent / "fixtures"
HAS_DATA = (DATA / "her2st").is_dir()


def needs_data() -> Path:
    """The data folder, or a skip of the calling test (only when STMIX_DATA_DIR is unset)."""
    if not HAS_DATA:
        pytest.skip(f"reads the real data: set STMIX_DATA_DIR (nothing at {DATA})")
    return DATA


def snapshot(adata: ad.AnnData) -> dict:
    """Everything a failed call must leave as it was."""
    return {
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "obsm": {k: np.array(v, copy=True) for k, v in adata.obsm.items()},
        "obsp": {k: v.copy() for k, v in adata.obsp.items()},
        "layers": sorted(adata.layers),
        "uns": sorted(adata.uns),
        "X": None if adata.X is None else adata.X.copy(),
    }


def defaults(function) -> dict:
    """The default of each parameter of ``function`` that has one."""
    parameters = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def assert_unchanged(adata: ad.AnnData, before: dict) -> None:
    after = snapshot(adata)
    assert after["uns"] == before["uns"]
    assert after["layers"] == before["layers"]
    assert list(after["obsm"]) == list(before["obsm"])
    assert list(after["obsp"]) == list(before["obsp"])
    assert after["obs"].equals(before["obs"])
    assert after["var"].equals(before["var"])
    for key, value in before["obsm"].items():
        np.testing.assert_array_equal(after["obsm"][key], value)
    for key, value in before["obsp"].items():
        assert (after["obsp"][key] != value).nnz == 0
    dense = [
        x.toarray() if sparse.issparse(x) else np.asarray(x, dtype=float)
        for x in (after["X"], before["X"])
        if x is not None
    ]
    if len(dense) < 2:
        assert after["X"] is None and before["X"] is None
        return
    np.testing.assert_array_equal(*dense)  # NaN == NaN here


#: A tiny timm backbone and small patches keep every training test at a second or two on a CPU.
TINY = {"backbone": "test_efficientnet", "pretrained": False, "epochs": 2, "progress": False}
#: Settings with which the tiny backbone learns the synthetic section (measured: every method goes
#: from the training mean's validation MSE of 0.22 to 0.01-0.03 in 30 epochs, 2-3 s each).
LEARN = {
    "backbone": "test_efficientnet",
    "pretrained": False,
    "epochs": 30,
    "lr": 3e-3,
    "batch_size": 16,
    "progress": False,
}


#: The pretrained configuration of :class:`Pixels`.
CFG = {"mean": (0.1, 0.2, 0.3), "std": (0.5, 0.25, 0.125), "input_size": (3, 6, 6)}


class Pixels(nn.Module):
    """A backbone whose features are its input's pixels, with a pretrained configuration."""

    def __init__(self, cfg):
        super().__init__()
        self.pretrained_cfg = cfg
        self.num_features = 48

    def forward(self, x):
        return x.flatten(1)
