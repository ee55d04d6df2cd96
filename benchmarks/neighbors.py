"""Time and memory of ``stmix.pp.neighbors`` and of partner sampling at scale.

    python benchmarks/neighbors.py --spots 100000 --genes 50 --train 1.0

Synthetic spots on a jittered hexagonal grid with smooth expression fields; prints seconds,
peak memory added by the call, and the time to draw partners for a batch of 1,024 on the CPU.
"""

from __future__ import annotations

import argparse
import platform
import time
import tracemalloc

import anndata as ad
import numpy as np
import pandas as pd
import torch

import stmix
from stmix.nn import CandidateSampler


def synthetic(n: int, genes: int, train: float, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    i, j = np.divmod(np.arange(n), side)
    coords = np.c_[j * 100.0 + (i % 2) * 50.0, i * 86.6] + rng.normal(0, 3, (n, 2))
    waves = rng.normal(size=(genes, 2)) / 3000
    y = np.sin(coords @ waves.T) + rng.normal(0, 0.3, (n, genes))
    adata = ad.AnnData(np.log1p(np.exp(y)).astype(np.float32))
    adata.obsm["spatial"] = coords
    labels = np.where(rng.random(n) < train, "train", "test")
    adata.obs["stmix_split"] = pd.Categorical(labels, categories=["train", "val", "test"])
    return adata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spots", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=50)
    parser.add_argument("--train", type=float, default=1.0, help="share of training spots")
    parser.add_argument("--neighbors", type=int, default=10)
    args = parser.parse_args()

    adata = synthetic(args.spots, args.genes, args.train)
    n_train = int((adata.obs["stmix_split"] == "train").sum())
    print(
        f"{platform.node()} ({torch.get_num_threads()} threads): {args.spots:,} spots, "
        f"{n_train:,} training, {args.genes} genes, k={args.neighbors}"
    )
    tracemalloc.start()
    start = time.perf_counter()
    stmix.pp.neighbors(adata, args.neighbors)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    weights = adata.obsp["stmix_weights"]
    print(
        f"pp.neighbors(basis='spatial'): {seconds:.2f} s, peak {peak / 2**20:.0f} MiB "
        f"({peak / (n_train * args.neighbors):.0f} bytes per spot x neighbour)"
    )

    train = np.flatnonzero(adata.obs["stmix_split"] == "train")
    sub = weights[train][:, train].tocsr()
    sampler = CandidateSampler.from_csr(sub.indptr, sub.indices, sub.data)
    anchors = torch.randint(0, n_train, (1024,))
    for _ in range(10):
        sampler(anchors)
    timings = []
    for _ in range(200):
        t0 = time.perf_counter()
        sampler(anchors)
        timings.append(time.perf_counter() - t0)
    print(
        f"partners for a batch of 1,024 on the CPU: median {np.median(timings) * 1e3:.3f} ms, "
        f"90th percentile {np.percentile(timings, 90) * 1e3:.3f} ms"
    )


if __name__ == "__main__":
    main()
