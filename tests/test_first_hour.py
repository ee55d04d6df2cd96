"""What a new user meets first: offline loading, misspelt genes, figures in scripts."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import requests
import scanpy as sc

import stmix
from stmix.cli import main


def test_offline_without_a_data_folder_names_both_ways_out(monkeypatch, capsys):
    import pooch

    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'github.com'")

    monkeypatch.delenv("STMIX_DATA_DIR", raising=False)
    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(ConnectionError, match=r"STMIX_DATA_DIR.*root="):
        stmix.datasets.her2st("C3")
    assert main(["her2st", "C3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "STMIX_DATA_DIR" in err and "--root" in err and "HTTPSConnectionPool" not in err


def test_fit_suggests_the_gene_a_user_meant(her2st, tmp_path, capsys):
    adata = her2st("C2")[:, :2000].copy()
    sc.pp.log1p(adata)
    gene = str(adata.var_names[5])
    adata.write_h5ad(tmp_path / "c2.h5ad")
    args = ["fit", str(tmp_path / "c2.h5ad"), "--model", str(tmp_path / "m")]
    assert main([*args, "--genes", f"{gene.lower()},NOTAGENE"]) == 2
    err = capsys.readouterr().err
    assert f"{gene.lower()} (did you mean {gene}?)" in err and "NOTAGENE" in err
    assert not (tmp_path / "m").exists()


def test_maps_in_a_script_leave_the_figure_for_savefig(prepared, tmp_path):
    prepared.layers["stmix"] = prepared.X.astype(np.float32)
    plt.close("all")
    assert stmix.pl.maps(prepared, prepared.var_names[0]) is None  # shown: Agg shows nothing
    plt.savefig(tmp_path / "after.png")  # what a script writes next
    assert plt.gcf().axes  # the maps, not a blank figure
    assert (tmp_path / "after.png").stat().st_size > 10_000
    plt.close("all")


def test_choosing_genes_by_morans_i_prints_no_import_noise():
    """squidpy's import makes docrep warn about squidpy's docstrings; stmix imports it quietly."""
    import subprocess
    import sys

    code = (
        "import stmix\n"
        "adata = stmix.datasets.synthetic(64, seed=0)\n"
        "stmix.pp.select_genes(adata, 4, method='moran')\n"
        "import squidpy\n"  # already imported, quietly: the user's own import stays quiet
    )
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, check=True
    )
    assert "Warning" not in done.stderr, done.stderr
