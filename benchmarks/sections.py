"""Leave one section out on HER2ST C2-C6: train on four sections, predict the fifth.

    STMIX_DATA_DIR=../shared/data python benchmarks/sections.py --config cpu
    python benchmarks/sections.py --config cpu --summarise   # tables from the CSV only

The field's protocol (ST-Net, HisToGene, Hist2ST, THItoGene, BLEEP, mclSTExp, TRIPLEX report it on
HER2ST): for each held-out section, train on the others and score the held-out one by the mean
over genes of the Pearson correlation across its spots (``pcc``; genes constant in the held-out
section skipped and counted), the same over its 50 highest-expressed genes (``pcc_heg``), and MSE.
``mean`` predicts the training sections' mean expression everywhere, for scale.

Protocol here: the five sections of patient C, log-normalised per spot; genes chosen on the four
training sections only (``top250``: the 250 highest mean; ``hvg785``: the published 785-gene
list, those present); early stopping on 10% of the training sections' spots (drawn with the seed),
not on a validation section, so four sections train; every method with the same network and
budget. Rows are appended to ``benchmarks/results/sections_<config>.csv`` as they finish (an
interrupted run resumes); ``sections_<config>.md`` summarises them.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
import torch
from scipy import stats

import stmix
from stmix.tl._baseline import training_mean

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("C2", "C3", "C4", "C5", "C6")
METHODS = ("mean", "none", "mixup", "cutmix", "knn", "snr")

#: ``cpu``: the ``cpu`` preset made to fit 4 hours on 2 cores: 64 px patches instead of 112, at
#: most 12 epochs with patience 4 instead of 40 and 10, batches of 16; and a smaller grid, since
#: the whole one (2 gene sets × 5 sections × 6 methods × 3 seeds, 1.5-5 min a run here) takes
#: 6-12 hours: the top 250 genes and seed 0 (``--genes hvg785``, ``--seeds 1 2`` add the rest).
#: ``paper``: the ``paper`` preset (a GPU), the whole grid. ``smoke``: seconds per run; checks
#: the script only.
CONFIGS: dict[str, dict] = {
    "cpu": {
        "preset": "cpu",
        "size": 64,
        "fit": {"epochs": 12, "batch_size": 16, "plan_kwargs": {"patience": 4}},
        "genes": ["top250"],
        "seeds": [0],
    },
    "paper": {
        "preset": "paper",
        "size": 224,
        "fit": {},
        "genes": ["top250", "hvg785"],
        "seeds": [0, 1, 2],
    },
    "smoke": {
        "preset": "cpu",
        "size": 32,
        "fit": {"backbone": "test_efficientnet", "pretrained": False, "epochs": 1},
        "genes": ["top250"],
        "seeds": [0],
    },
}
COLUMNS = [
    "config",
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
    "n_skipped",
    "n_test",
    "n_train",
    "best_epoch",
    "epochs_run",
    "seconds",
    "machine",
]


def load(data_dir: Path) -> sc.AnnData:
    """C2-C6 in one AnnData, log-normalised per spot (normalize_total 1e4, log1p)."""
    adata = stmix.datasets.her2st(list(SECTIONS), root=data_dir / "her2st")
    sc.pp.filter_genes(adata, min_cells=1)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def genes_for(adata, held_out: str, gene_set: str, data_dir: Path) -> list[str]:
    """The genes to predict, chosen without looking at the held-out section."""
    train = (adata.obs["library_id"] != held_out).to_numpy()
    x = adata.X[train]
    mean = np.asarray(x.mean(axis=0)).ravel()
    if gene_set == "top250":
        return list(adata.var_names[np.argsort(-mean, kind="stable")[:250]])
    if gene_set == "moran64":  # spatially variable genes, scored on the training sections only
        training = adata[train].copy()
        stmix.pp.select_genes(training, 64, method="moran", library_key="library_id")
        return list(training.var_names[training.var["stmix_selected"].to_numpy()])
    listed = np.load(data_dir / "her2st" / "her_hvg_cut_1000.npy", allow_pickle=True)
    return [str(g) for g in listed if g in adata.var_names]


def run_one(adata, genes, held_out, method, seed, config) -> dict:
    """One held-out section, method and seed: its row."""
    fold = adata[:, genes].copy()
    fold.X = fold.X.toarray() if hasattr(fold.X, "toarray") else fold.X
    stmix.pp.split(fold, test=[held_out], val=0.1, seed=seed)
    row = {"n_train": int((fold.obs["stmix_split"] == "train").sum())}
    mean = training_mean(fold)
    started = time.perf_counter()
    if method == "mean":
        train = (fold.obs["stmix_split"] == "train").to_numpy()
        mean_row = np.asarray(fold.X[train].mean(axis=0), dtype=np.float32).ravel()
        fold.layers["stmix"] = np.broadcast_to(mean_row, fold.shape).copy()
        row.update(best_epoch=0, epochs_run=0)
    else:
        if method in ("snr", "knn"):
            stmix.pp.neighbors(fold, 10)
        model = stmix.tl.fit(
            fold,
            augment=method,
            preset=config["preset"],
            seed=seed,
            progress=False,
            **config["fit"],
        )
        stmix.tl.impute(fold, model, progress=False)
        record = fold.uns["stmix"]
        row.update(best_epoch=int(record["best_epoch"]), epochs_run=len(record["history"]["epoch"]))
    stmix.tl.evaluate(fold)
    scores = fold.uns["stmix_metrics"]["by_library"][held_out]
    row.update({k: scores[k] for k in ("pcc", "pcc_heg", "mse", "mae", "n_genes", "n_skipped")})
    row.update(
        mean_mse=mean["mse"],
        n_test=scores["n_spots"],
        seconds=time.perf_counter() - started,
    )
    return row


def metric_table(part: pd.DataFrame, methods, metric: str, *, seconds: bool = False) -> list[str]:
    """Markdown: one row per method, one column per held-out section and ``all``, mean ± sd."""
    sections = sorted(part["held_out"].unique())
    extra = " seconds per fit |" if seconds else ""
    lines = [
        f"### {metric}",
        "",
        "| method | " + " | ".join(sections) + " | all |" + extra,
        "| --- | "
        + " | ".join("---" for _ in sections)
        + " | --- |"
        + (" --- |" if seconds else ""),
    ]
    for method in methods:
        rows = part[part["method"] == method]
        cells = []
        for section in [*sections, None]:
            values = rows[metric] if section is None else rows[rows["held_out"] == section][metric]
            values = values.dropna()
            cells.append(
                "n/a"
                if values.empty
                else f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
                if len(values) > 1
                else f"{values.mean():.3f}"
            )
        if seconds:
            cells.append(f"{rows['seconds'].mean():.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def machine_name() -> str:
    """The machine a row ran on, as the result files record it."""
    return (
        f"{platform.node()} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, {'CUDA' if torch.cuda.is_available() else 'CPU'})"
    )


def paired_table(
    part: pd.DataFrame, methods, base_name: str, unit: str = "held-out section"
) -> list[str]:
    """Markdown: each method against ``base_name``, paired over ``held_out`` × seed."""
    base = part[part["method"] == base_name].set_index(["held_out", "seed"])
    lines = [
        f"Against `{base_name}` (paired over {unit} × seed; Wilcoxon signed-rank, "
        "two-sided; positive median difference = the method better):",
        "",
        "| method | PCC: median diff | PCC: p | MSE: median diff | MSE: p | pairs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for method in methods:
        if method in (base_name, "mean"):
            continue
        other = part[part["method"] == method].set_index(["held_out", "seed"])
        both = other.join(base, lsuffix="_m", rsuffix="_n", how="inner")
        if both.empty:
            continue
        cells = []
        for metric, sign in (("pcc", 1), ("mse", -1)):
            diff = sign * (both[f"{metric}_m"] - both[f"{metric}_n"])
            p = stats.wilcoxon(diff).pvalue if len(diff) > 1 and np.any(diff != 0) else np.nan
            cells += [f"{np.median(diff):+.4f}", f"{p:.3g}"]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {len(both)} |")
    return [*lines, ""]


def summarise(frame: pd.DataFrame, config: str, command: str) -> str:
    """Markdown: per held-out section and method, mean ± sd over seeds; paired tests vs none."""
    lines = [
        f"# Leave-one-section-out benchmark, config `{config}`",
        "",
        f"Command: `{command}`  ",
        f"Machine: {', '.join(sorted(set(frame['machine'])))}  ",
        f"Runs: {len(frame)}",
        "",
        "Train on four of HER2ST C2-C6, score the fifth: mean PCC over genes (`pcc`, the "
        "literature's primary number), over the 50 highest-expressed genes (`pcc_heg`), MSE, "
        "and the MSE of the training mean (`mean_mse`). Mean ± sd over seeds.",
        "",
        "Seeds run per held-out section (trained methods): "
        + "; ".join(
            f"{section} {', '.join(str(s) for s in sorted(set(part['seed'])))}"
            for section, part in frame[frame["method"] != "mean"].groupby("held_out")
        )
        + ". `all` averages every run, so sections with more seeds weigh more; compare methods "
        "within a section, or with the paired test.",
        "",
    ]
    methods = [m for m in METHODS if m in set(frame["method"])]
    for gene_set in sorted(frame["genes"].unique()):
        part = frame[frame["genes"] == gene_set]
        lines += [f"## Genes: {gene_set} ({int(part['n_genes'].median())} genes)", ""]
        for metric in ("pcc", "pcc_heg", "mse"):
            lines += metric_table(part, methods, metric)
        if {"none", "snr"} <= set(part["method"]):
            lines += paired_table(part, methods, "none")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu", choices=sorted(CONFIGS))
    parser.add_argument("--held-out", nargs="+", default=list(SECTIONS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, help="default: the config's")
    parser.add_argument(
        "--genes", nargs="+", choices=("top250", "hvg785", "moran64"), help="default: the config's"
    )
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--summarise", action="store_true", help="only rewrite the summary")
    args = parser.parse_args()

    data_dir = Path(os.environ.get("STMIX_DATA_DIR", "../shared/data")).resolve()
    config = CONFIGS[args.config]
    args.seeds = args.seeds or config["seeds"]
    args.genes = args.genes or config["genes"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"sections_{args.config}.csv"
    command = f"python benchmarks/sections.py --config {args.config}"
    done = pd.read_csv(csv) if csv.is_file() else pd.DataFrame(columns=COLUMNS)
    machine = machine_name()
    if not args.summarise:
        adata = load(data_dir)
        stmix.pp.patches(adata, size=config["size"], progress=False)
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
                        row = run_one(adata, genes, held_out, method, seed, config)
                        row.update(
                            config=args.config,
                            genes=gene_set,
                            held_out=held_out,
                            method=method,
                            seed=seed,
                            machine=machine,
                        )
                        done = pd.concat([done, pd.DataFrame([row])[COLUMNS]], ignore_index=True)
                        done.to_csv(csv, index=False)
                        print(
                            f"{gene_set} {held_out} seed {seed} {method:7s} pcc {row['pcc']:.3f} "
                            f"heg {row['pcc_heg']:.3f} mse {row['mse']:.4f} "
                            f"(mean {row['mean_mse']:.4f}) {row['seconds']:.0f} s",
                            flush=True,
                        )
    (out / f"sections_{args.config}.md").write_text(summarise(done, args.config, command))
    print(f"wrote {csv} and {csv.with_suffix('.md')}")


if __name__ == "__main__":
    main()
