"""Shared fixtures: the real data in ``$STMIX_DATA_DIR`` (default ``../shared/data``)."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

import stmix
from tests.support import DATA, DATA_GIVEN, FIXTURES, HAS_DATA, REPO, needs_data


def pytest_configure(config):
    os.environ.setdefault("MPLBACKEND", "Agg")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # one pytest-xdist worker per core: one torch thread in each (and in the commands and
        # kernels tests start), or two workers of two spinning OpenMP threads share two cores
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        import numba
        import torch

        torch.set_num_threads(1)
        # scanpy's numba kernels start OpenMP threads, one per core, which also resized torch's
        # pool mid-run (two workers then ran four spinning threads on two cores: twice as slow)
        numba.config.THREADING_LAYER = "workqueue"
        numba.set_num_threads(1)
    if DATA_GIVEN and not HAS_DATA:
        raise pytest.UsageError(
            f"STMIX_DATA_DIR is {DATA}, which does not hold her2st/: set it to the folder that "
            f"holds her2st/ and mouse_brain_crop/ (unset, the tests that read data are skipped)."
        )


def pytest_report_header(config):
    if not HAS_DATA:
        return f"real data: none at {DATA}; the tests that read it are skipped (set STMIX_DATA_DIR)"
    return f"real data: {DATA}"


@pytest.fixture(autouse=True)
def _one_torch_thread_per_worker():
    """Each test starts with the worker's one torch thread, whatever a library did before."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


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


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data's folder; the test is skipped when there is none and none was named."""
    return needs_data()


@pytest.fixture(scope="session")
def _her2st_cache() -> dict:
    return {}


@pytest.fixture
def her2st(_her2st_cache, data_dir):
    """Load a HER2ST section (cached for the session; each call returns a fresh copy)."""

    def load(section: str = "C2") -> ad.AnnData:
        if section not in _her2st_cache:
            _her2st_cache[section] = stmix.datasets.her2st(section, root=data_dir / "her2st")
        return _her2st_cache[section].copy()

    return load


@pytest.fixture(scope="session")
def reference(data_dir) -> dict:
    """Numbers from the public reference implementation on section C3."""
    with np.load(FIXTURES / "her2st_C3_reference.npz") as npz:
        return {key: npz[key] for key in npz.files}


@pytest.fixture
def mouse_brain(data_dir) -> ad.AnnData:
    return ad.read_h5ad(data_dir / "mouse_brain_crop" / "test_data.h5ad")


@pytest.fixture(scope="session")
def mouse_brain_image(data_dir) -> Path:
    return data_dir / "mouse_brain_crop" / "test_img.jpg"


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


@pytest.fixture(scope="session")
def c2_slides(data_dir, tmp_path_factory) -> dict:
    """Section C2's H&E as the whole-slide images users have, written once for the session.

    ``"svs"`` (Aperio), ``"generic"`` (a tiled pyramid, pages in sequence) and ``"ome"`` hold
    the whole image at its 0.69 µm/px with two coarser levels; ``"flat"`` is one level in
    strips of a 2,048-px crop from (3,000, 3,000). ``"image"`` is the decoded JPEG, ``"mpp"``
    its pixel size.
    """
    from PIL import Image

    from tests.slides import write_slide

    folder = tmp_path_factory.mktemp("slides")
    section = stmix.datasets.her2st("C2", root=data_dir / "her2st")
    metadata = section.uns["spatial"]["C2"]["metadata"]
    with stmix._image.large_images(), Image.open(metadata["source_image_path"]) as decoded:
        image = np.asarray(decoded.convert("RGB"))
    mpp = metadata["microns_per_pixel"]
    return {
        "image": image,
        "mpp": mpp,
        "svs": write_slide(folder / "C2.svs", image, mpp=mpp, flavour="aperio"),
        "generic": write_slide(folder / "C2.tif", image, mpp=mpp, flavour="generic"),
        "ome": write_slide(folder / "C2.ome.tif", image, mpp=mpp, flavour="ome"),
        "flat": write_slide(
            folder / "C2_crop.tif", image[3000:5048, 3000:5048], mpp=mpp, flavour="flat"
        ),
    }
