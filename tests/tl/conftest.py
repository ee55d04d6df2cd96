from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc

import stmix

#: A tiny timm backbone and small patches keep every training test at a second or two on a CPU.
TINY = {"backbone": "test_efficientnet", "pretrained": False, "epochs": 2, "progress": False}


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
