"""How long does tiling a whole HER2ST slide take, and how much memory? (issue: < 30 s, < 3 GB)

    STMIX_DATA_DIR=../shared/data python benchmarks/tile.py

Tiles the full-resolution image of section C2 (about 9,300 x 9,900 px) with 100 µm pseudo-spots
100 µm apart on a hexagonal grid (the pixel size from the ST array's 200 µm pitch) and cuts their
112 px patches, as ``stmix predict`` does before predicting. Appends a row to
``benchmarks/results/tile_<machine>.csv``: seconds for tiling and for patches, spots, peak
resident memory of the process.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

import pandas as pd

import stmix

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    data = Path(os.environ.get("STMIX_DATA_DIR", "../shared/data")).resolve() / "her2st"
    section = stmix.datasets.her2st("C2", root=data)
    entry = section.uns["spatial"]["C2"]
    image = entry["metadata"]["source_image_path"]
    mpp = entry["metadata"]["microns_per_pixel"]
    del section

    start = time.perf_counter()
    grid = stmix.pp.tile(image, spot_diameter=100, spacing=100, mpp=mpp)
    tiled = time.perf_counter()
    stmix.pp.patches(grid, size=112, progress=False)
    done = time.perf_counter()
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux
    row = {
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores)",
        "image": Path(image).name,
        "pixels": "x".join(map(str, entry["metadata"]["full_resolution_shape"])),
        "microns_per_pixel": round(mpp, 4),
        "spots": grid.n_obs,
        "tile_seconds": round(tiled - start, 2),
        "patches_seconds": round(done - tiled, 2),
        "total_seconds": round(done - start, 2),
        "peak_memory_gb": round(peak_gb, 2),
    }
    print(row)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"tile_{platform.node()}.csv"
    previous = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    pd.concat([previous, pd.DataFrame([row])], ignore_index=True).to_csv(path, index=False)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
