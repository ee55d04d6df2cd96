"""Shared fixtures: the real data in ``$STMIX_DATA_DIR`` (default ``../shared/data``)."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from scipy import sparse

import stmix

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    if os.environ.get("STMIX_DATA_DIR"):
        return Path(os.environ["STMIX_DATA_DIR"]).resolve()
    return REPO.parent / "shared" / "data"


DATA = _data_dir()
FIXTURES = DATA.parent / "fixtures"


def pytest_configure(config):
    os.environ.setdefault("MPLBACKEND", "Agg")
    if not (DATA / "her2st").is_dir():
        raise pytest.UsageError(
            f"The real test data is not at {DATA}: set STMIX_DATA_DIR to the folder that holds "
            f"her2st/ and mouse_brain_crop/."
        )


def pytest_collection_modifyitems(config, items):
    """Under mutation testing (``benchmarks/mutation.py``), run the fastest tests first.

    mutmut runs the tests that reach a mutant with ``-x``: the first failure kills it, so the
    order decides the cost. Its own stats record each test's duration.
    """
    if not os.environ.get("MUTANT_UNDER_TEST"):
        return
    import json

    stats = REPO / "mutmut-stats.json"  # REPO is mutmut's copy of the project, mutants/
    if stats.is_file():
        durations = json.loads(stats.read_text()).get("duration_by_test", {})
        items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))


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


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def _her2st_cache() -> dict:
    return {}


@pytest.fixture
def her2st(_her2st_cache):
    """Load a HER2ST section (cached for the session; each call returns a fresh copy)."""

    def load(section: str = "C2") -> ad.AnnData:
        if section not in _her2st_cache:
            _her2st_cache[section] = stmix.datasets.her2st(section, root=DATA / "her2st")
        return _her2st_cache[section].copy()

    return load


@pytest.fixture(scope="session")
def reference() -> dict:
    """Numbers from the public reference implementation on section C3."""
    with np.load(FIXTURES / "her2st_C3_reference.npz") as npz:
        return {key: npz[key] for key in npz.files}


@pytest.fixture
def mouse_brain() -> ad.AnnData:
    return ad.read_h5ad(DATA / "mouse_brain_crop" / "test_data.h5ad")


@pytest.fixture(scope="session")
def mouse_brain_image() -> Path:
    return DATA / "mouse_brain_crop" / "test_img.jpg"


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


@pytest.fixture(scope="session")
def _synthetic_section():
    adata = stmix.datasets.synthetic(256, seed=0)
    stmix.pp.patches(adata, size=16, progress=False)
    stmix.pp.split(adata, seed=0)
    stmix.pp.neighbors(adata, 5)
    return adata


@pytest.fixture
def synthetic(_synthetic_section):
    """The synthetic section (256 spots, 8 genes): 16 px patches, split 30/20/50, neighbours."""
    return _synthetic_section.copy()


@pytest.fixture(scope="session")
def _prepared_c2(_her2st_cache, data_dir):
    adata = stmix.datasets.her2st("C2", root=data_dir / "her2st")
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    top = np.sort(np.argsort(np.asarray(adata.X.mean(axis=0)).ravel())[-24:])
    adata = adata[:, top].copy()
    adata.X = adata.X.toarray()
    stmix.pp.patches(adata, size=32, progress=False)
    stmix.pp.split(adata)
    stmix.pp.neighbors(adata, 5)
    return adata


@pytest.fixture
def prepared(_prepared_c2):
    """Real C2: log-normalised, 24 genes, 32 px patches, split and neighbours."""
    return _prepared_c2.copy()


@pytest.fixture(scope="session")
def _two_synthetic_sections():
    sections = {
        name: stmix.datasets.synthetic(144, seed=seed, library_id=name)
        for seed, name in enumerate(("A", "B"))
    }
    adata = stmix.pp.concat(sections)
    stmix.pp.patches(adata, size=16, progress=False)
    stmix.pp.split(adata, seed=0)
    stmix.pp.neighbors(adata, 5)
    return adata


@pytest.fixture
def two_sections(_two_synthetic_sections):
    """Two synthetic sections (obs["library_id"] A and B): 16 px patches, split, neighbours."""
    return _two_synthetic_sections.copy()


@pytest.fixture(scope="session")
def c2_to_c6(data_dir):
    """The five real HER2ST sections of patient C in one AnnData, raw counts (session-wide)."""
    return stmix.datasets.her2st(["C2", "C3", "C4", "C5", "C6"], root=data_dir / "her2st")
