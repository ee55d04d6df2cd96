"""Whole-slide images in bounded memory: a 100,000 × 80,000 px slide tiled and its patches cut.

    STMIX_DATA_DIR=../shared/data python benchmarks/wsi.py [--folder /tmp/stmix_wsi]

Builds once (kept in ``--folder``, about 2 GB) from the HER2ST sections, with
``tests/slides.py``:

- ``big.svs``: an Aperio SVS of 100,000 × 80,000 px at 0.25 µm/px (JPEG tiles of 256 px, quality
  80, 7 levels) holding C2-C6 and C2 again, each rescaled from its 0.69 µm/px to 0.25 µm/px;
- ``section.svs`` and ``section.jpg``: C3 alone at 0.25 µm/px (25,500 × 27,300 px), as a slide
  and as the JPEG that the PIL path decodes whole: a slide both paths can open.

Then measures, each step in a fresh process (peak resident memory: its ``VmHWM``):

1. ``big``: ``pp.tile`` (55 µm spots, 100 µm apart, the pixel size from the slide) and
   ``pp.patches`` at 112 px into memory; ``big-store``: the same, the patches streamed to zarr;
2. ``before`` / ``after``: tile and patches of ``section.jpg`` through PIL, and of
   ``section.svs`` by region, the same grid;
3. ``throughput``: on ``section.svs``, slide → patches → ``tl.embed`` at 112 px against
   ``tl.embed`` alone on the same patches held in memory (Lite0 with its packaged weights).

Writes ``benchmarks/results/wsi_<machine>.md`` (and ``.csv``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SECTIONS = ["C2", "C3", "C4", "C5", "C6", "C2"]
MPP = 0.25
SIZE = (100_000, 80_000)
SPOT_UM, SPACING_UM, PATCH_PX = 55, 100, 112


def _data() -> Path:
    return Path(os.environ.get("STMIX_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()


def build(folder: Path) -> None:
    """Write the slides (skipped when they are there)."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from PIL import Image

    import stmix
    from tests.slides import write_montage

    Image.MAX_IMAGE_PIXELS = None
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for name in dict.fromkeys(SECTIONS):
        section = stmix.datasets.her2st(name, root=_data() / "her2st")
        metadata = section.uns["spatial"][name]["metadata"]
        images[name] = (Image.open(metadata["source_image_path"]).convert("RGB"), metadata)
    if not (folder / "big.svs").is_file():
        started = time.perf_counter()
        sections = [(images[n][0], images[n][1]["microns_per_pixel"]) for n in SECTIONS]
        write_montage(folder / "big.part.svs", sections, size=SIZE, mpp=MPP, flavour="aperio")
        (folder / "big.part.svs").rename(folder / "big.svs")
        print(f"big.svs written in {time.perf_counter() - started:.0f} s")
    if not (folder / "section.svs").is_file():
        image, metadata = images["C3"]
        scale = metadata["microns_per_pixel"] / MPP
        size = (round(image.size[0] * scale), round(image.size[1] * scale))
        large = image.resize(size, Image.Resampling.BILINEAR)
        large.save(folder / "section.jpg", quality=90)
        from tests.slides import write_slide

        write_slide(folder / "section.svs", np.asarray(large), mpp=MPP, flavour="aperio", levels=5)
        print(f"section slide written ({size[0]} × {size[1]} px)")


def measure(step: str, folder: Path) -> dict:
    """One step, in this process; returns its row."""
    import numpy as np

    import stmix

    started = time.perf_counter()
    row: dict = {"step": step}
    if step in ("big", "big-store", "before", "after"):
        path = folder / {"big": "big.svs", "big-store": "big.svs"}.get(step, "section.svs")
        mpp: float | str = "slide"
        if step == "before":
            path, mpp = folder / "section.jpg", MPP
        grid = stmix.pp.tile(path, spot_diameter=SPOT_UM, spacing=SPACING_UM, mpp=mpp)
        tiled = time.perf_counter()
        store = folder / "big_patches.zarr" if step == "big-store" else None
        if store is not None and store.exists():
            import shutil

            shutil.rmtree(store)
        stmix.pp.patches(grid, size=PATCH_PX, store=store, progress=False)
        done = time.perf_counter()
        patches = grid.obsm["stmix_patches"]
        row.update(
            slide=path.name,
            pixels=f"{grid.uns['spatial'][path.stem]['metadata']['full_resolution_shape']}",
            spots=grid.n_obs,
            tile_s=round(tiled - started, 1),
            patches_s=round(done - tiled, 1),
            checksum=int(np.asarray(patches[: min(500, grid.n_obs)]).astype(np.int64).sum()),
        )
    elif step == "throughput":
        grid = stmix.pp.tile(
            folder / "section.svs", spot_diameter=SPOT_UM, spacing=SPACING_UM, mpp="slide"
        )
        cut = time.perf_counter()
        stmix.pp.patches(grid, size=PATCH_PX, progress=False)
        cut_s = time.perf_counter() - cut
        embed = time.perf_counter()
        stmix.tl.embed(grid, size=PATCH_PX, progress=False)
        embed_s = time.perf_counter() - embed
        row.update(
            slide="section.svs",
            spots=grid.n_obs,
            patches_s=round(cut_s, 1),
            embed_s=round(embed_s, 1),
            slide_to_embedding_per_s=round(grid.n_obs / (cut_s + embed_s), 1),
            encoder_alone_per_s=round(grid.n_obs / embed_s, 1),
            ratio=round(embed_s / (cut_s + embed_s), 3),
        )
    row["peak_rss_gb"] = round(peak_rss() / 1024**3, 2)
    return row


def peak_rss() -> int:
    """This process's peak resident memory in bytes (VmHWM).

    Not ``getrusage``'s ``ru_maxrss``: Linux carries a parent's peak into a child it starts, so
    a child of the process that built the slides would report the builder's 10 GB.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="/tmp/stmix_wsi", type=Path)
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)  # a child's one step
    parser.add_argument(
        "--steps", nargs="+", default=["big", "big-store", "before", "after", "throughput"]
    )
    parser.add_argument("--report", action="store_true", help="only rewrite the Markdown")
    args = parser.parse_args()
    if args.report:
        report(RESULTS / f"wsi_{platform.node()}.csv")
        return
    if args.step == "build":
        build(args.folder)
        return
    if args.step:
        print(json.dumps(measure(args.step, args.folder)))
        return
    built = subprocess.run(
        [sys.executable, __file__, "--folder", str(args.folder), "--step", "build"]
    )
    if built.returncode:
        sys.exit(built.returncode)
    rows = []
    for step in args.steps:
        result = subprocess.run(
            [sys.executable, __file__, "--folder", str(args.folder), "--step", step],
            capture_output=True,
            text=True,
        )
        if result.returncode:
            print(result.stderr[-3000:])
            rows.append({"step": step, "error": result.stderr.strip().splitlines()[-1]})
            continue
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(rows[-1])
    write(rows)


def write(rows: list[dict]) -> None:
    import pandas as pd

    RESULTS.mkdir(exist_ok=True)
    name = f"wsi_{platform.node()}"
    pd.DataFrame(rows).to_csv(RESULTS / f"{name}.csv", index=False)
    report(RESULTS / f"{name}.csv")


def report(csv: Path) -> None:
    """The Markdown tables of a run's CSV."""
    import pandas as pd

    table = pd.read_csv(csv)
    memory = table[table["step"] != "throughput"][
        ["step", "slide", "pixels", "spots", "tile_s", "patches_s", "peak_rss_gb"]
    ]
    speed = table[table["step"] == "throughput"][
        [
            "slide",
            "spots",
            "patches_s",
            "embed_s",
            "slide_to_embedding_per_s",
            "encoder_alone_per_s",
            "ratio",
        ]
    ]
    machine = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, CPU)"
    csv.with_suffix(".md").write_text(
        "# Whole-slide images\n\n"
        f"Command: `python benchmarks/wsi.py`  \nMachine: {machine}  \n"
        f"Date: {time.strftime('%Y-%m-%d')}\n\n"
        f"Tiling ({SPOT_UM} µm pseudo-spots, {SPACING_UM} µm apart) and {PATCH_PX} px patches; "
        "peak resident memory of the process doing it (imports included):\n\n"
        + memory.to_markdown(index=False)
        + "\n\nSlide → patches → `tl.embed` at 112 px, against the encoder alone on the same "
        "patches in memory (ratio = encoder time / (patches + encoder time)):\n\n"
        + speed.to_markdown(index=False)
        + "\n"
    )
    print(f"wrote {csv.with_suffix('.md')}")


if __name__ == "__main__":
    main()
