"""Scale: time and peak memory of neighbors, patches to a store, embed and one epoch of fit.

    python benchmarks/scale.py                       # 10k and 100k spots, every step
    python benchmarks/scale.py --neighbors 1000000   # pp.neighbors alone on 1M spots
    python benchmarks/scale.py --summarise           # the table from the CSV only

Synthetic sections (:func:`stmix.datasets.synthetic`: spots on a square grid, each a stained disc
of 8 px whose colour sets 8 genes; for ``pp.neighbors`` alone, grid coordinates with jitter and
50 genes of smooth random expression, no image). Each step runs in a fresh process that first
builds or reads what it needs, so a step's memory is measured alone: ``rss_before_gb`` is the
process after its inputs are loaded, ``peak_gb`` its highest resident memory during the step
(sampled every 5 ms), ``extra_gb`` the difference, the memory the step itself needs.

Steps: ``neighbors`` (``pp.neighbors(adata, 10)`` over all spots as training spots),
``patches`` (``pp.patches(size=64, store=...)``, patches cut block by block into a zarr store,
a lazy array in ``obsm``), ``embed`` (``tl.embed`` of the stored patches, the 1.5 M-parameter
``test_efficientnet`` without pretrained weights, at 64 px), ``fit`` (one epoch of
``tl.fit`` fine-tuning that backbone on the lazy patches, 90% training spots, batch 64, no
augmentation, two loader workers, 5% validation spots). Rows go to
``benchmarks/results/scale_<machine>.csv``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
STEPS = ("neighbors", "patches", "embed", "fit")
BACKBONE = {"backbone": "test_efficientnet", "pretrained": False}


def rss_gb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


class Peak:
    """The highest resident memory of this process while the block runs."""

    def __enter__(self):
        self.peak = rss_gb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_gb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_gb())


def section(n: int, work: Path):
    """The synthetic section of ``n`` spots, made once and kept as h5ad (without patches)."""
    import anndata as ad

    import stmix

    path = work / f"section_{n}.h5ad"
    if path.is_file():
        return ad.read_h5ad(path)
    adata = stmix.datasets.synthetic(n, spot_diameter=8, seed=0)
    adata.write_h5ad(path)
    return adata


def coordinates(n: int):
    """Spots on a jittered grid with 50 smoothly varying genes; no image."""
    import anndata as ad
    import numpy as np

    rng = np.random.default_rng(0)
    side = int(np.ceil(np.sqrt(n)))
    row, col = np.divmod(np.arange(n), side)
    xy = np.c_[col, row].astype(np.float64) * 100 + rng.normal(0, 5, (n, 2))
    phase = rng.uniform(0, 2 * np.pi, (50, 2))
    x = np.sin(xy[:, :1] / 2000 + phase[:, 0]) + np.cos(xy[:, 1:] / 3000 + phase[:, 1])
    x = (x + 0.3 * rng.standard_normal((n, 50))).astype(np.float32)
    adata = ad.AnnData(x)
    adata.obsm["spatial"] = xy
    adata.obs["stmix_split"] = pd.Categorical(["train"] * n, categories=["train", "val", "test"])
    return adata


def one(step: str, n: int, work: Path) -> dict:
    """Run one step in this process; its time and memory."""
    import stmix

    store = work / f"patches_{n}.zarr"
    lazy = work / f"section_{n}_lazy.h5ad"
    if step == "neighbors":
        adata = coordinates(n)
        run = lambda: stmix.pp.neighbors(adata, 10)  # noqa: E731
    elif step == "patches":
        adata = section(n, work)
        if store.exists():
            import shutil

            shutil.rmtree(store)

        def run():
            stmix.pp.patches(adata, size=64, store=store, progress=False)

    else:
        import anndata as ad

        adata = ad.read_h5ad(lazy)
        if step == "embed":

            def run():
                stmix.tl.embed(adata, size=64, progress=False, **BACKBONE)

        else:
            stmix.pp.split(adata, train=0.9, val=0.05, seed=0)

            def run():
                stmix.tl.fit(
                    adata,
                    augment="none",
                    epochs=1,
                    batch_size=64,
                    workers=2,
                    progress=False,
                    **BACKBONE,
                )

    import gc

    if step in ("embed", "fit"):  # libraries load before the clock starts
        import lightning  # noqa: F401
        import timm  # noqa: F401
        import torch  # noqa: F401

        from stmix.tl import _embed, _fit  # noqa: F401
    gc.collect()
    before = rss_gb()
    started = time.perf_counter()
    with Peak() as peak:
        run()
    seconds = time.perf_counter() - started
    if step == "patches":
        del adata.obsm["stmix_patches"]  # the store keeps them; the record names it
        adata.write_h5ad(lazy)
    return {
        "step": step,
        "n_spots": n,
        "seconds": round(seconds, 3),
        "rss_before_gb": round(before, 3),
        "peak_gb": round(peak.peak, 3),
        "extra_gb": round(peak.peak - before, 3),
        "store_gb": round(sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e9, 3)
        if step == "patches"
        else None,
    }


def machine() -> str:
    import torch

    return (
        f"{platform.node()} ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {'CUDA' if torch.cuda.is_available() else 'CPU'})"
    )


def summarise(frame: pd.DataFrame, out: Path) -> None:
    lines = [
        "# Scale",
        "",
        "Command: `python benchmarks/scale.py` (and `--neighbors 1000000`)  ",
        f"Machine: {', '.join(sorted(set(frame['machine'])))}",
        "",
        "| step | spots | seconds | memory before (GB) | peak (GB) | own (GB) | store (GB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in frame.sort_values(
        ["step", "n_spots"],
        key=lambda s: s.map({k: i for i, k in enumerate(STEPS)}) if s.name == "step" else s,
    ).itertuples():
        store = "" if pd.isna(row.store_gb) else f"{row.store_gb:.2f}"
        lines.append(
            f"| {row.step} | {row.n_spots:,} | {row.seconds:.1f} | {row.rss_before_gb:.2f} | "
            f"{row.peak_gb:.2f} | {row.extra_gb:.2f} | {store} |"
        )
    lines += [
        "",
        "Slope of the step's own memory against spots (from the smallest to the largest n):",
        "",
    ]
    for step, rows in frame.groupby("step"):
        rows = rows.sort_values("n_spots")
        if len(rows) < 2:
            continue
        first, last = rows.iloc[0], rows.iloc[-1]
        growth = last.n_spots / first.n_spots
        memory = max(last.extra_gb, 1e-3) / max(first.extra_gb, 1e-3)
        time_growth = last.seconds / max(first.seconds, 1e-6)
        lines.append(
            f"- {step}: spots ×{growth:.0f}, own memory ×{memory:.2f}, time ×{time_growth:.1f}"
        )
    (out / f"scale_{platform.node()}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    parser.add_argument("--neighbors", nargs="*", type=int, default=[], help="extra sizes")
    parser.add_argument("--work", default="/tmp/stmix_scale", help="where stores are written")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--summarise", action="store_true")
    parser.add_argument("--one", nargs=2, metavar=("STEP", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), work)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"scale_{platform.node()}.csv"
    frame = pd.read_csv(csv) if csv.is_file() else pd.DataFrame()
    if not args.summarise:
        jobs = [(s, n) for n in args.sizes for s in args.steps]
        jobs += [("neighbors", n) for n in args.neighbors]
        for step, n in jobs:
            done = subprocess.run(
                [sys.executable, __file__, "--one", step, str(n), "--work", str(work)],
                capture_output=True,
                text=True,
            )
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{step} on {n} spots failed")
            row = json.loads(done.stdout.strip().splitlines()[-1]) | {"machine": machine()}
            print(row, flush=True)
            if not frame.empty:
                frame = frame[~((frame["step"] == step) & (frame["n_spots"] == n))]
            frame = (
                pd.DataFrame([row])
                if frame.empty
                else pd.concat([frame, pd.DataFrame([row])], ignore_index=True)
            )
            frame.to_csv(csv, index=False)
    summarise(frame, out)
    print(f"wrote {csv}")


if __name__ == "__main__":
    main()
