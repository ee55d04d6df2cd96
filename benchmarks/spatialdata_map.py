"""The picture of the SpatialData page: a held-out section's predicted ERBB2, drawn by
spatialdata-plot from the table stmix wrote back, beside the flag of unfamiliar tissue.

    STMIX_DATA_DIR=../shared/data python benchmarks/spatialdata_map.py   # a few minutes

C2-C6 as one SpatialData (each section's H&E pyramid, its spots as circles, one table), written
to zarr and read back; the ridge probe on frozen Lite0 features learns from C3-C6 (a tenth of
each validating) and predicts C2 with 90% intervals; ``stmix.io.to_spatialdata`` writes the
table; spatialdata-plot draws it. Writes ``docs/spatialdata_map.png``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import spatialdata  # noqa: E402
import spatialdata_plot  # noqa: E402, F401

import stmix  # noqa: E402
from tests.sdata import build, section_elements  # noqa: E402

SECTIONS = ["C2", "C3", "C4", "C5", "C6"]


def main() -> None:
    data = Path(os.environ.get("STMIX_DATA_DIR", ROOT.parent / "shared" / "data")) / "her2st"
    parts = []
    for name in SECTIONS:
        section = stmix.datasets.her2st(name, root=data)
        with stmix._image.large_images():
            path = section.uns["spatial"][name]["metadata"]["source_image_path"]
            image = np.asarray(Image.open(path).convert("RGB").reduce(2))
        section.obsm["spatial"] = section.obsm["spatial"] / 2
        section.uns["spatial"][name]["scalefactors"]["spot_diameter_fullres"] /= 2
        parts.append(section_elements(section, image, name, system=name))
    store = Path(tempfile.mkdtemp()) / "her2st.zarr"
    build(parts).write(store)
    sdata = spatialdata.read_zarr(store)

    adata = stmix.io.from_spatialdata(sdata)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    stmix.pp.split(adata, test=["C2_spots"], val=0.1)
    stmix.pp.select_genes(adata, 250, method="mean", split="train")
    stmix.pp.patches(adata, size=224, side_um=None, progress=False)
    stmix.tl.embed(adata, progress=False)
    model = stmix.tl.fit(adata, genes="stmix_selected", use_rep="stmix_embedding", head="ridge")
    stmix.tl.impute(adata, model, interval=0.9, progress=False)
    c2 = adata[(adata.obs["library_id"] == "C2_spots").to_numpy()].copy()
    stmix.io.to_spatialdata(c2, sdata)

    fig, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
    for ax, color, title in (
        (axes[0], "ERBB2", "ERBB2 predicted on held-out C2"),
        (axes[1], "ood", "unlike the training spots (0-1)"),
    ):
        sdata.pl.render_images("C2_image").pl.render_shapes(
            "C2_spots",
            color=color,
            table_name="stmix",
            cmap="viridis" if color == "ERBB2" else "RdYlGn_r",
        ).pl.show(coordinate_systems="C2", ax=ax, title=title)
    fig.savefig(ROOT / "docs" / "spatialdata_map.png", dpi=90)
    print("wrote docs/spatialdata_map.png")


if __name__ == "__main__":
    main()
