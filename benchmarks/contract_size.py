"""How much do predictions add to an .h5ad, and how big is ``stmix predict``'s file?

    STMIX_DATA_DIR=../shared/data python benchmarks/contract_size.py

1. The README's quickstart on HER2ST C3 (64 genes by Moran's I, 112 px patches, the ``cpu``
   preset; one epoch here, since the sizes do not depend on training): the ``.h5ad`` written
   before ``tl.impute`` and after it, with the predictions in ``layers["stmix"]``.
2. ``stmix predict`` on C3's full-resolution image with a 20-gene model: the file's size, shape
   and keys, and whether ``sc.pl.spatial(sc.read_h5ad(out), color=gene)`` draws it.

Writes ``benchmarks/results/contract_size.md``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import scanpy as sc

import stmix

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(os.environ.get("STMIX_DATA_DIR", "../shared/data")).resolve()


def mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def c3(n_genes: int, method: str):
    """HER2ST C3, log-normalised, ``n_genes`` chosen by ``method``, 112 px patches."""
    adata = stmix.datasets.her2st("C3", root=DATA / "her2st")
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    stmix.pp.select_genes(adata, n_genes, method=method)
    stmix.pp.patches(adata, size=112, progress=False)
    return adata


def quickstart(work: Path) -> list[str]:
    adata = c3(64, "moran")
    stmix.pp.split(adata, train=0.3, val=0.2)
    stmix.pp.neighbors(adata, n_neighbors=10)
    model = stmix.tl.fit(adata, genes="stmix_selected", augment="snr", epochs=1, progress=False)
    adata.write_h5ad(work / "before.h5ad")
    stmix.tl.impute(adata, model, progress=False)
    adata.write_h5ad(work / "after.h5ad")
    layer = adata.layers["stmix"]
    kind = type(layer).__name__
    values = adata.n_obs * len(model.genes) * 4 / 1e6
    growth = mb(work / "after.h5ad") - mb(work / "before.h5ad")
    return [
        f"| quickstart C3 ({adata.n_obs} spots × {adata.n_vars} genes, 64 predicted), before "
        f"`tl.impute` | {mb(work / 'before.h5ad'):.2f} MB | |",
        f"| the same after `tl.impute` (`layers['stmix']`: {kind}) | "
        f"{mb(work / 'after.h5ad'):.2f} MB | +{growth:.3f} MB; the float32 predictions alone "
        f"are {values:.3f} MB |",
    ]


def predict(work: Path) -> list[str]:
    prepared = c3(20, "mean")
    stmix.pp.split(prepared)
    model = stmix.tl.fit(prepared, genes="stmix_selected", augment="none", epochs=1, progress=False)
    model.save(work / "model")
    slide = prepared.uns["spatial"]["C3"]["metadata"]["source_image_path"]
    out = work / "slide.h5ad"
    command = ["predict", slide, "--model", str(work / "model"), "--out", str(out), "--quiet"]
    subprocess.run([sys.executable, "-m", "stmix.cli", *command], check=True)
    back = ad.read_h5ad(out)
    axes = sc.pl.spatial(back, color=model.genes[0], show=False)
    images = {k: v.shape for k, v in back.uns["spatial"][Path(slide).stem]["images"].items()}
    return [
        f"| `stmix predict` C3 image, 20-gene model | {mb(out):.2f} MB | {back.n_obs} × "
        f"{back.n_vars} (X: the predictions), obsm {sorted(back.obsm)}, images {images}; "
        f"`sc.pl.spatial(..., color={model.genes[0]!r})` drew "
        f"{'a map' if axes[0].get_title() == model.genes[0] else 'nothing'} |",
    ]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        rows = quickstart(Path(folder)) + predict(Path(folder))
    lines = [
        "# Predictions in the AnnData contract: file sizes",
        "",
        "Command: `STMIX_DATA_DIR=../shared/data python benchmarks/contract_size.py`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, CPU only",
        "",
        "| file | size | content |",
        "| --- | --- | --- |",
        *rows,
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "contract_size.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
