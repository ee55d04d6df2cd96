"""Does SNR-ST-Mix beat the other augmentations on real data? The paper's protocol on HER2ST.

    STMIX_DATA_DIR=../shared/data python benchmarks/augmentations.py --config cpu
    python benchmarks/augmentations.py --config cpu --summarise   # tables from the CSV only

For each section (C2-C6 by default), seed and method: log-normalise (the reference's
preprocessing: drop empty spots/genes, normalize_total 1e4, log1p), keep the top 250 genes by
mean (or the 785-gene HER2ST list, ``--genes hvg785``), split 30/20/50 with the seed, train with
early stopping on the validation MSE, score the untouched test spots. Every method gets the same
backbone, budget and hyper-parameters; only the augmentation differs. ``mean`` is the training
mean predicted everywhere, for scale.

Rows are appended to ``benchmarks/results/augment_<config>.csv`` as they finish, so an
interrupted run resumes where it stopped; ``augment_<config>.md`` summarises them: mean ± sd per
section and method, and SNR-ST-Mix against each baseline (sections won, paired Wilcoxon
signed-rank test over sections × seeds).

Frozen-encoder rows (``ridge``, ``linear-*``, ``mlp-*``; as ``benchmarks/probe.py`` but within
the section): Lite0 with its packaged ImageNet weights embeds every spot's 224 px patch once per
section (``tl.embed``), then the HEST ridge probe (its penalty chosen on the validation spots) or a
head with ``none`` / ``mixup`` / ``knn`` / ``snr`` (200 epochs, patience 20) trains on the same
30/20/50 split as the fine-tuned rows, so every row of a section × seed is paired.
``--genes moran64``: the 64 genes of highest Moran's I, scored on the training and validation spots
of each split only (never the test spots); run for the ``mean`` and frozen-encoder rows.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
from scipy import stats

import stmix

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe import HEAD_FIT, PROBES, head_comparisons
from sections import machine_name, paired_table

RESULTS = Path(__file__).resolve().parent / "results"

#: Configurations: a training preset of stmix (stmix.tl.PRESETS, the one place its settings live)
#: and what changes. ``cpu``: EfficientNet-Lite0 with the packaged ImageNet weights at 112 px (see
#: the preset for how its learning rate was chosen). ``paper``: ViT-L/16 at 224 px with the
#: paper's optimiser settings (needs its weights and a GPU). ``smoke``: seconds per run; checks
#: the script, says nothing about the methods.
CONFIGS: dict[str, dict] = {
    "cpu": {"preset": "cpu", "fit": {}},
    "paper": {"preset": "paper", "fit": {}},
    "smoke": {
        "preset": "cpu",
        "size": 32,
        "fit": {"backbone": "test_efficientnet", "pretrained": False, "epochs": 2},
        "embed": {"backbone": "test_efficientnet", "pretrained": False, "size": 32},
        "head": {"epochs": 2},
    },
}
#: The frozen encoder of the probe rows (its packaged ImageNet weights).
EMBED = {"backbone": "tf_efficientnet_lite0", "size": 224}


#: Methods: ``augment=`` values, plus SNR-ST-Mix variants the paper leaves open.
VARIANTS: dict[str, dict] = {
    "snr-expression": {"augment": "snr", "neighbors": {"basis": "expression"}},
    "snr-refkernel": {"augment": "snr", "neighbors": {"kernel": "reference"}},
    "snr-refedge": {"augment": "snr", "fit": {"plan_kwargs": {"edge_weight": "reference"}}},
    # the public code's main experiment: expression neighbours (9 partners), distance kernel,
    # edge weights over all training spots
    "snr-reference": {
        "augment": "snr",
        "neighbors": {"basis": "expression", "n_neighbors": 9, "kernel": "reference"},
        "fit": {"plan_kwargs": {"edge_weight": "reference"}},
    },
}
BASELINES = ("none", "basic", "mixup", "cutmix", "cmixup", "knn")
COLUMNS = [
    "config",
    "section",
    "method",
    "seed",
    "mse",
    "mae",
    "pcc",
    "best_epoch",
    "epochs_run",
    "seconds",
    "seconds_per_epoch",
    "n_genes",
    "n_test",
    "machine",
]


def prepare(section: str, genes: str, size: int, data_dir: Path, embed: dict | None = None):
    """A section after the reference's preprocessing, with patches and the genes to predict.

    ``genes="moran64"`` keeps every gene: the selection depends on the split (:func:`moran64`).
    ``embed``: also the frozen encoder's embedding of every spot (``obsm["stmix_embedding"]``).
    """
    adata = stmix.datasets.her2st(section, root=data_dir / "her2st")
    sc.pp.filter_cells(adata, min_genes=1)
    sc.pp.filter_genes(adata, min_cells=1)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    if genes == "top250":
        stmix.pp.select_genes(adata, 250, method="mean")
        selected = adata.var_names[adata.var["stmix_selected"].to_numpy()]
    elif genes == "hvg785":
        listed = np.load(data_dir / "her2st" / "her_hvg_cut_1000.npy", allow_pickle=True)
        selected = [g for g in listed if g in adata.var_names]
    else:
        selected = adata.var_names
    adata = adata[:, selected].copy()
    adata.X = adata.X.toarray()
    if embed is not None:
        embed = dict(embed)
        stmix.pp.patches(adata, size=embed.pop("size"), key_added="probe_patches", progress=False)
        stmix.tl.embed(adata, patches_key="probe_patches", progress=False, **embed)
        del adata.obsm["probe_patches"]
    stmix.pp.patches(adata, size=size, progress=False)
    return adata


def moran64(adata, seed: int):
    """The 64 genes of highest Moran's I on the split's training and validation spots."""
    split = stmix.pp.split(adata, train=0.3, val=0.2, seed=seed, copy=True)
    seen = split[(split.obs["stmix_split"] != "test").to_numpy()].copy()
    stmix.pp.select_genes(seen, 64, method="moran")
    return adata[:, seen.var["stmix_selected"].to_numpy()].copy()


def run_one(adata, method: str, seed: int, config: dict) -> dict:
    """One row: ``method`` trained and tested on the split of ``seed`` (stmix.tl.compare)."""
    if method in PROBES:
        head, _, augment = method.partition("-")
        budget = {} if head == "ridge" else config.get("head", HEAD_FIT)
        spec = {
            "augment": augment or "none",
            "fit": {"use_rep": "stmix_embedding", "head": head, **budget},
        }
        fit_kwargs = {"preset": config["preset"]}
    else:
        spec = VARIANTS.get(method, {"augment": method})
        fit_kwargs = {"preset": config["preset"], **config["fit"]}
    frame = stmix.tl.compare(
        adata,
        {method: spec},
        seeds=[seed],
        train=0.3,
        val=0.2,
        neighbors_kwargs={"n_neighbors": 10},
        **fit_kwargs,
    )
    return frame.iloc[0].drop(["method", "seed"]).to_dict()


def summarise(frame: pd.DataFrame, config: str, command: str) -> str:
    """Markdown: mean ± sd per section and method; SNR-ST-Mix against each baseline."""
    lines = [
        f"# Augmentation benchmark, config `{config}`",
        "",
        f"Command: `{command}`  ",
        f"Machine: {', '.join(sorted(set(frame['machine'])))}  ",
        f"Runs: {len(frame)} ({frame['section'].nunique()} sections × "
        f"{frame['seed'].nunique()} seeds × {frame['method'].nunique()} methods)",
        "",
    ]
    order = [
        m for m in ("mean", *BASELINES, "snr", *VARIANTS, *PROBES) if m in set(frame["method"])
    ]
    for metric, better in (("mse", "lower"), ("pcc", "higher")):
        lines += [f"## Test {metric.upper()} ({better} is better), mean ± sd over seeds", ""]
        sections = sorted(frame["section"].unique())
        lines += [
            "| method | " + " | ".join(sections) + " | all |",
            "| --- | " + " | ".join("---" for _ in sections) + " | --- |",
        ]
        for method in order:
            rows = frame[frame["method"] == method]
            cells = []
            for section in [*sections, None]:
                values = (
                    rows[metric] if section is None else rows[rows["section"] == section][metric]
                )
                values = values.dropna()
                cells.append(
                    f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"
                    if len(values) > 1
                    else f"{values.mean():.4f}"
                    if len(values)
                    else "n/a"
                )
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")

    if "snr" in set(frame["method"]):
        lines += [
            "## SNR-ST-Mix (`snr`) against each method",
            "",
            "Sections won: sections where snr's mean over seeds is better. Wilcoxon: "
            "two-sided paired signed-rank test over the section × seed pairs "
            "(positive median difference = snr better).",
            "",
            "| vs | MSE: sections won | MSE: median diff | MSE: p | PCC: sections won "
            "| PCC: median diff | PCC: p | pairs |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        snr = frame[frame["method"] == "snr"].set_index(["section", "seed"])
        for other in order:
            if other == "snr":
                continue
            base = frame[frame["method"] == other].set_index(["section", "seed"])
            both = snr.join(base, lsuffix="_snr", rsuffix="_other", how="inner")
            if both.empty:
                continue
            cells = []
            for metric, sign in (("mse", -1), ("pcc", 1)):
                diff = (sign * (both[f"{metric}_snr"] - both[f"{metric}_other"])).dropna()
                if diff.empty:  # the training mean has no correlation
                    cells += ["n/a", "n/a", "n/a"]
                    continue
                per_section = diff.groupby(level="section").mean()
                won = f"{int((per_section > 0).sum())}/{len(per_section)}"
                p = (
                    stats.wilcoxon(diff).pvalue
                    if len(diff) > 1 and np.any(diff != 0)
                    else float("nan")
                )
                cells += [won, f"{np.median(diff):+.4f}", f"{p:.3g}"]
            lines.append(f"| {other} | " + " | ".join(cells) + f" | {len(both)} |")
        lines.append("")
    # the frozen-encoder rows, also against the fine-tuned `none`
    probes = frame.rename(columns={"section": "held_out"})
    comparisons = head_comparisons(order)
    comparisons.insert(1, ("none", order))
    for base_name, methods in comparisons:
        if base_name in set(frame["method"]) and set(PROBES) & set(frame["method"]):
            lines += [f"## Against `{base_name}`", ""]
            lines += paired_table(probes, methods, base_name, unit="section")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu", choices=sorted(CONFIGS))
    parser.add_argument("--sections", nargs="+", default=["C2", "C3", "C4", "C5", "C6"])
    parser.add_argument(
        "--methods", nargs="+", default=["mean", *BASELINES, "snr", *VARIANTS, *PROBES]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--genes", default="top250", choices=("top250", "hvg785", "moran64"))
    parser.add_argument("--weights", default=None, help="local backbone weights file")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--summarise", action="store_true", help="only rewrite the summary")
    parser.add_argument(
        "--tag", default=None, help="suffix of the result files, to keep an earlier run beside"
    )
    args = parser.parse_args()

    data_dir = Path(os.environ.get("STMIX_DATA_DIR", "../shared/data")).resolve()
    config = CONFIGS[args.config]
    config.setdefault("size", stmix.tl.PRESETS[config["preset"]].size)
    if args.weights:
        config["fit"]["weights"] = args.weights
    name = args.config if args.genes == "top250" else f"{args.config}_{args.genes}"
    name = name if args.tag is None else f"{name}_{args.tag}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"augment_{name}.csv"
    command = (
        "python benchmarks/augmentations.py --config "
        + args.config
        + ("" if args.genes == "top250" else f" --genes {args.genes}")
        + ("" if args.tag is None else f" --tag {args.tag}")
        + (
            ""
            if args.methods == parser.get_default("methods")
            else " --methods " + " ".join(args.methods)
        )
    )
    done = pd.read_csv(csv) if csv.is_file() else pd.DataFrame(columns=COLUMNS)
    machine = machine_name()

    if not args.summarise:
        for section in args.sections:
            adata = None
            for seed in args.seeds:
                for method in args.methods:
                    key = (
                        (done["section"] == section)
                        & (done["method"] == method)
                        & (done["seed"] == seed)
                    )
                    if key.any():
                        continue
                    if adata is None:
                        embed = (
                            config.get("embed", EMBED) if set(PROBES) & set(args.methods) else None
                        )
                        adata = prepare(section, args.genes, config["size"], data_dir, embed)
                    run = moran64(adata, seed) if args.genes == "moran64" else adata
                    row = run_one(run, method, seed, config)
                    row.update(
                        config=name,
                        section=section,
                        method=method,
                        seed=seed,
                        n_genes=run.n_vars,
                        machine=machine,
                        n_test=int(adata.n_obs - int(adata.n_obs * 0.3) - int(adata.n_obs * 0.2)),
                    )
                    done = pd.concat([done, pd.DataFrame([row])[COLUMNS]], ignore_index=True)
                    done.to_csv(csv, index=False)
                    print(
                        f"{section} seed {seed} {method:15s} mse {row['mse']:.4f} "
                        f"pcc {row['pcc']:.4f} best {row['best_epoch']:>3} "
                        f"{row['seconds']:.0f} s",
                        flush=True,
                    )
    (out / f"augment_{name}.md").write_text(summarise(done, name, command))
    print(f"wrote {csv} and {csv.with_suffix('.md')}")


if __name__ == "__main__":
    main()
