"""The frozen-encoder path on HER2ST C2-C6: the HEST ridge probe against heads with SNR-ST-Mix.

    STMIX_DATA_DIR=../shared/data python benchmarks/probe.py
    python benchmarks/probe.py --summarise   # tables from the CSV only

Two parts, both written to ``benchmarks/results/``:

``probe_timing_<machine>.csv``: the costs a user pays. Embedding C2 (its 187 spots, Lite0 with
its packaged ImageNet weights, 224 px) and fitting the ridge probe on a 60/20/20 split of its
spots; then a ``linear`` head with ``snr`` for 200 epochs (no early stopping) on that embedding.

``probe_<machine>.csv`` / ``probe_<machine>.md``: leave one section out, as
``benchmarks/sections.py`` (same sections, normalisation, genes chosen on the training
sections, 10% of the training sections' spots for validation and early stopping), on frozen
Lite0 embeddings of 224 px patches computed once. Methods: ``mean`` (training mean), ``ridge``
(the HEST recipe, its penalty chosen on the validation spots), and ``linear`` / ``mlp`` heads
with ``none``, ``mixup``, ``knn`` and ``snr`` (200 epochs, patience 20, the head defaults
otherwise). Three seeds (the split and the head's initialisation and sampling).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sections import SECTIONS, genes_for, load, machine_name, metric_table, paired_table

import stmix

RESULTS = Path(__file__).resolve().parent / "results"
#: The frozen-encoder methods (here and in ``benchmarks/augmentations.py``): the HEST ridge
#: probe, and each head with each vector augmentation, trained with ``HEAD_FIT``.
PROBES = (
    "ridge",
    "linear-none",
    "linear-mixup",
    "linear-knn",
    "linear-snr",
    "mlp-none",
    "mlp-mixup",
    "mlp-knn",
    "mlp-snr",
)
HEAD_FIT = {"epochs": 200, "plan_kwargs": {"patience": 20}}
METHODS = ("mean", *PROBES)


def head_comparisons(methods) -> list[tuple[str, list[str]]]:
    """The paired tables of the frozen-encoder rows: every method against the ridge probe, and
    each head's mixing against the same head without (SNR-ST-Mix in embedding space)."""
    return [
        ("ridge", list(methods)),
        ("linear-none", [m for m in methods if m.startswith("linear-")]),
        ("mlp-none", [m for m in methods if m.startswith("mlp-")]),
    ]


COLUMNS = [
    "genes",
    "held_out",
    "method",
    "seed",
    "pcc",
    "pcc_heg",
    "mse",
    "mae",
    "mean_mse",
    "n_genes",
    "n_test",
    "n_train",
    "best_epoch",
    "epochs_run",
    "seconds",
    "machine",
]


def timing(data_dir: Path, out: Path) -> None:
    """The two costs the frozen-encoder path promises, on C2."""
    adata = stmix.datasets.her2st("C2", root=data_dir / "her2st")
    import scanpy as sc

    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    stmix.pp.select_genes(adata, 250, method="mean")
    stmix.pp.split(adata, train=0.6, val=0.2, seed=0)
    stmix.pp.patches(adata, size=224, progress=False)
    stmix.pp.neighbors(adata, 10)
    rows = []
    started = time.perf_counter()
    stmix.tl.embed(adata, progress=False)
    embedded = time.perf_counter() - started
    stmix.tl.fit(
        adata, genes="stmix_selected", use_rep="stmix_embedding", head="ridge", progress=False
    )
    both = time.perf_counter() - started
    rows.append(
        {
            "step": "embed C2 (Lite0, 224 px) + ridge",
            "n_spots": adata.n_obs,
            "seconds": both,
            "detail": f"embed {embedded:.1f} s, ridge {both - embedded:.1f} s, "
            f"alpha {adata.uns['stmix']['params']['alpha']:.3g}",
            "goal_seconds": 30,
        }
    )
    started = time.perf_counter()
    model = stmix.tl.fit(
        adata,
        genes="stmix_selected",
        use_rep="stmix_embedding",
        head="linear",
        augment="snr",
        epochs=200,
        plan_kwargs={"patience": 200},
        progress=False,
    )
    seconds = time.perf_counter() - started
    rows.append(
        {
            "step": "linear head, snr, 200 epochs",
            "n_spots": int((adata.obs["stmix_split"] == "train").sum()),
            "seconds": seconds,
            "detail": f"{len(model.history)} epochs run",
            "goal_seconds": 20,
        }
    )
    frame = pd.DataFrame(rows).assign(machine=machine_name())
    path = out / f"probe_timing_{platform.node()}.csv"
    frame.to_csv(path, index=False)
    print(frame.to_string(index=False))
    print(f"wrote {path}")


def run_one(adata, genes, held_out, method, seed) -> dict:
    fold = adata[:, genes].copy()
    fold.X = fold.X.toarray() if hasattr(fold.X, "toarray") else fold.X
    stmix.pp.split(fold, test=[held_out], val=0.1, seed=seed)
    train = (fold.obs["stmix_split"] == "train").to_numpy()
    row = {"n_train": int(train.sum())}
    started = time.perf_counter()
    if method == "mean":
        mean_row = np.asarray(fold.X[train].mean(axis=0), dtype=np.float32).ravel()
        fold.layers["stmix"] = np.broadcast_to(mean_row, fold.shape).copy()
        row.update(best_epoch=0, epochs_run=0)
    else:
        head, _, augment = method.partition("-")
        kwargs = {} if head == "ridge" else {"augment": augment, **HEAD_FIT}
        if augment in ("snr", "knn"):
            stmix.pp.neighbors(fold, 10)
        model = stmix.tl.fit(
            fold, use_rep="stmix_embedding", head=head, seed=seed, progress=False, **kwargs
        )
        stmix.tl.impute(fold, model, progress=False)
        record = fold.uns["stmix"]
        history = record.get("history") or {}
        row.update(
            best_epoch=int(record.get("best_epoch", 0) or 0),
            epochs_run=len(history.get("epoch", [])),
        )
    stmix.tl.evaluate(fold)
    metrics = fold.uns["stmix_metrics"]
    scores = metrics["by_library"][held_out]
    row.update({k: scores[k] for k in ("pcc", "pcc_heg", "mse", "mae", "n_genes")})
    mean = fold.X[train].mean(axis=0)
    test = (fold.obs["stmix_split"] == "test").to_numpy()
    row.update(
        mean_mse=float(np.mean((fold.X[test] - mean) ** 2)),
        n_test=scores["n_spots"],
        seconds=time.perf_counter() - started,
    )
    return row


def summarise(frame: pd.DataFrame, command: str) -> str:
    lines = [
        "# Frozen encoder + probe, leave one section out (HER2ST C2-C6)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {', '.join(sorted(set(frame['machine'])))}  ",
        f"Runs: {len(frame)}",
        "",
        "Lite0 (packaged ImageNet weights) embeddings of 224 px patches, computed once; train on "
        "four sections, score the fifth. Mean ± sd over seeds (the ridge and the mean depend on "
        "the seed only through the 10% validation spots).",
        "",
    ]
    methods = [m for m in METHODS if m in set(frame["method"])]
    for gene_set in sorted(frame["genes"].unique()):
        part = frame[frame["genes"] == gene_set]
        lines += [f"## Genes: {gene_set} ({int(part['n_genes'].median())} genes)", ""]
        for metric in ("pcc", "pcc_heg", "mse"):
            lines += metric_table(part, methods, metric, seconds=True)
        for base_name, against in head_comparisons(methods):
            if base_name in set(part["method"]):
                lines += paired_table(part, against, base_name)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", nargs="+", default=list(SECTIONS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--genes", nargs="+", default=["top250", "moran64"], choices=("top250", "hvg785", "moran64")
    )
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--summarise", action="store_true", help="only rewrite the summary")
    args = parser.parse_args()

    data_dir = Path(os.environ.get("STMIX_DATA_DIR", "../shared/data")).resolve()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"probe_{platform.node()}.csv"
    command = "python benchmarks/probe.py"
    done = pd.read_csv(csv) if csv.is_file() else pd.DataFrame(columns=COLUMNS)
    if not args.summarise:
        if not args.skip_timing:
            timing(data_dir, out)
        adata = load(data_dir)
        stmix.pp.patches(adata, size=224, progress=False)
        started = time.perf_counter()
        stmix.tl.embed(adata, progress=False)
        print(f"embedded {adata.n_obs} spots in {time.perf_counter() - started:.1f} s", flush=True)
        del adata.obsm["stmix_patches"]
        for gene_set in args.genes:
            for held_out in args.held_out:
                genes = genes_for(adata, held_out, gene_set, data_dir)
                for seed in args.seeds:
                    for method in args.methods:
                        key = (
                            (done["genes"] == gene_set)
                            & (done["held_out"] == held_out)
                            & (done["method"] == method)
                            & (done["seed"] == seed)
                        )
                        if key.any():
                            continue
                        row = run_one(adata, genes, held_out, method, seed)
                        row.update(
                            genes=gene_set,
                            held_out=held_out,
                            method=method,
                            seed=seed,
                            machine=machine_name(),
                        )
                        done = pd.concat([done, pd.DataFrame([row])[COLUMNS]], ignore_index=True)
                        done.to_csv(csv, index=False)
                        print(
                            f"{gene_set} {held_out} seed {seed} {method:12s} pcc {row['pcc']:.3f} "
                            f"mse {row['mse']:.4f} (mean {row['mean_mse']:.4f}) "
                            f"{row['seconds']:.1f} s",
                            flush=True,
                        )
    (out / f"probe_{platform.node()}.md").write_text(summarise(done, command))
    print(f"wrote {csv} and {csv.with_suffix('.md')}")


if __name__ == "__main__":
    main()
