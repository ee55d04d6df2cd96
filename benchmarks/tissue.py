"""Does `pp.tile` mark tissue, not glass? Grid points on the mask that no measured spot is near.

    STMIX_DATA_DIR=../shared/data python benchmarks/tissue.py

For HER2ST C2-C6 and the mouse brain crop: a grid as dense as the spots are wide over the
section's image (``pp.tile(image, spacing=diameter)``), the points the tissue detector keeps, and
how many of them lie more than one spot pitch (the median nearest-neighbour distance of the
measured spots) from every measured spot. Also the measured spots that fall off the mask, and
for the mouse crop (whose tissue goes on past its 49 spots) the far points inside the measured
spots' bounding box widened by one pitch. Writes ``benchmarks/results/tissue.md`` and
``tissue.png`` (mask, measured spots in blue, far points in red).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

import stmix
from stmix import _image, _tissue

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("C2", "C3", "C4", "C5", "C6")
NOTE = (
    "The mouse brain crop's tissue goes on for about 200 px past its 49 measured spots on the "
    "right, at the bottom and in the torn fragments at the top (see tissue.png), so its far "
    "points are tissue that was not measured, not glass; the grey glass on its left is off the "
    "mask. The column 'far % inside the spots' box' counts only the grid points within one "
    "pitch of the measured spots' bounding box."
)


def far_points(grid: ad.AnnData, spots: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Tissue grid points, whether each is over one pitch from every spot, and the pitch."""
    pitch = float(np.median(cKDTree(spots).query(spots, k=2)[0][:, 1]))
    on = grid.obsm["spatial"][grid.obs["in_tissue"].to_numpy() == 1]
    distance, _ = cKDTree(spots).query(on)
    return on, distance > pitch, pitch


def measure(name: str, image: Path, spots: np.ndarray, diameter: float) -> dict:
    start = time.perf_counter()
    grid = stmix.pp.tile(image, spot_diameter=diameter, spacing=diameter)
    seconds = time.perf_counter() - start
    on, far, pitch = far_points(grid, spots)
    measured = stmix.pp.tile(image, spot_diameter=diameter, points=spots)
    box = ((on >= spots.min(0) - pitch) & (on <= spots.max(0) + pitch)).all(axis=1)
    return {
        "section": name,
        "tissue points": len(on),
        "far points": int(far.sum()),
        "far %": round(100 * far.mean(), 1),
        "far % inside the spots' box": round(100 * far[box].mean(), 1),
        "measured spots off the mask %": round(100 * (1 - measured.obs["in_tissue"].mean()), 1),
        "tile seconds": round(seconds, 2),
        "_grid": grid,
        "_far": on[far],
        "_spots": spots,
        "_image": image,
    }


def sections(data: Path) -> list[tuple[str, Path, np.ndarray, float]]:
    out = []
    for name in SECTIONS:
        section = stmix.datasets.her2st(name, root=data / "her2st")
        entry = section.uns["spatial"][name]
        out.append(
            (
                name,
                Path(entry["metadata"]["source_image_path"]),
                section.obsm["spatial"],
                entry["scalefactors"]["spot_diameter_fullres"],
            )
        )
    crop = ad.read_h5ad(data / "mouse_brain_crop" / "test_data.h5ad")
    (entry,) = crop.uns["spatial"].values()
    diameter = entry["scalefactors"]["spot_diameter_fullres"]
    image = data / "mouse_brain_crop" / "test_img.jpg"
    out.append(("mouse brain crop", image, crop.obsm["spatial"], diameter))
    return out


def figure(rows: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 4.4))
    for ax, row in zip(axes, rows, strict=True):
        with _image.large_images(), Image.open(row["_image"]) as image:
            scale = 1200 / max(image.size)
            image.thumbnail((1200, 1200))
            rgb = np.asarray(image.convert("RGB"))
        ax.imshow(rgb)
        ax.contour(_tissue.detect(rgb), levels=[0.5], colors="k", linewidths=0.8)
        ax.scatter(*(row["_spots"] * scale).T, s=2, c="tab:blue")
        ax.scatter(*(row["_far"] * scale).T, s=4, c="tab:red")
        ax.set_title(f"{row['section']}: {row['far points']} far ({row['far %']}%)")
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    data = Path(os.environ.get("STMIX_DATA_DIR", "../shared/data")).resolve()
    rows = [measure(*args) for args in sections(data)]
    RESULTS.mkdir(exist_ok=True)
    figure(rows, RESULTS / "tissue.png")
    columns = [key for key in rows[0] if not key.startswith("_")]
    lines = [
        "# Tissue detector: grid points on the mask far from every measured spot",
        "",
        "`STMIX_DATA_DIR=../shared/data python benchmarks/tissue.py` on "
        f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + " --- |" * len(columns),
    ]
    lines += ["| " + " | ".join(str(row[key]) for key in columns) + " |" for row in rows]
    lines += ["", NOTE]
    print("\n".join(lines))
    (RESULTS / "tissue.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'tissue.md'} and tissue.png")


if __name__ == "__main__":
    main()
