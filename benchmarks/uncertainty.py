"""Can a user trust the intervals and the flag? Coverage, width, spread against error, and the
flag of unfamiliar tissue, leave one section out over HER2ST C2-C6.

    STMIX_DATA_DIR=../shared/data python benchmarks/uncertainty.py   # about an hour here

For each held-out section (the protocol of ``benchmarks/sections.py`` and ``probe.py``: C2-C6
log-normalised, the top 250 genes by mean on the training sections, a tenth of each training
section validating, seed 0), two models:

- ``ridge``: the HEST probe on frozen Lite0 features of 224 px patches;
- ``fine-tuned``: Lite0 fine-tuned with SNR-ST-Mix at 64 px (the README's many-sections budget:
  12 epochs, batch 16, patience 4).

Each predicts the held-out section with ``interval=0.9``; reported per section: coverage of
the 90% intervals (mean over genes), their mean width, the Spearman correlation between the
spread and the absolute error (per gene over the section's spots, averaged), and the AUROC of
the flag between the held-out section's spots and (a) the mouse brain Visium crop's spots,
(b) the held-out section's patches made blank, blurred, pen-marked and re-stained
(``tests/artefacts.py``). Then **within one section** (random 30/20/50 spots of each section,
exchangeable with the validation spots) the same coverage. And the cost: impute with and
without ``interval`` on C2, same run. Writes ``benchmarks/results/uncertainty_<machine>.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from sections import SECTIONS, genes_for, load  # noqa: E402

import stmix  # noqa: E402
from tests.artefacts import artefacts  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LEVEL = 0.9
FINE_TUNE = {"augment": "snr", "epochs": 12, "batch_size": 16, "plan_kwargs": {"patience": 4}}
LITE0 = "tf_efficientnet_lite0"


def dense(x) -> np.ndarray:
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def scores(fold: ad.AnnData, held_out: str) -> dict:
    """Coverage, width and spread-error Spearman on the held-out spots."""
    stmix.tl.evaluate(fold)
    by = fold.uns["stmix_metrics"]["by_library"][held_out]
    test = (fold.obs["stmix_split"] == "test").to_numpy()
    genes = fold.var["stmix_predicted"].to_numpy()
    error = np.abs(dense(fold.layers["stmix"])[test][:, genes] - dense(fold.X)[test][:, genes])
    spread = dense(fold.layers["stmix_std"])[test][:, genes]
    rho = [
        spearmanr(spread[:, g], error[:, g]).statistic
        for g in range(error.shape[1])
        if np.ptp(spread[:, g]) > 0 and np.ptp(error[:, g]) > 0
    ]
    return {
        "pcc": by["pcc"],
        "coverage": by["coverage"],
        "width": by["width"],
        "spearman": float(np.nanmean(rho)) if rho else float("nan"),
    }


def auroc(tissue: np.ndarray, other: np.ndarray) -> float:
    labels = np.r_[np.zeros(len(tissue)), np.ones(len(other))]
    return float(roc_auc_score(labels, np.r_[tissue, other]))


def flags(model, fold, held_out, brain, patches_key) -> dict:
    """AUROC of the flag: held-out spots against mouse brain and against spoilt patches."""
    test = (fold.obs["stmix_split"] == "test").to_numpy()
    tissue = fold.obs["stmix_ood"].to_numpy()[test]
    out = {"auroc_brain": auroc(tissue, predicted_flag(model, brain, patches_key))}
    for name, patches in artefacts(fold.obsm[patches_key][test]).items():
        spoilt = fold[test].copy()
        spoilt.obsm[patches_key] = patches
        spoilt.obsm.pop("stmix_embedding", None)  # made again from the spoilt patches
        out[f"auroc_{name}"] = auroc(tissue, predicted_flag(model, spoilt, patches_key))
    return out


def predicted_flag(model, adata, patches_key) -> np.ndarray:
    pred = stmix.tl.predict(adata, model, interval=LEVEL, patches_key=patches_key, progress=False)
    return pred.obs["stmix_ood"].to_numpy()


def mouse_brain(data_dir: Path, size: int, key: str) -> ad.AnnData:
    """The mouse brain crop's spots, 100 µm patches (1.8 Visium spot diameters) as HER2ST's."""
    brain = ad.read_h5ad(data_dir / "mouse_brain_crop" / "test_data.h5ad")
    stmix.pp.patches(
        brain,
        size=size,
        image=data_dir / "mouse_brain_crop" / "test_img.jpg",
        spot_scale=100 / 55,
        key_added=key,
        progress=False,
    )
    return brain


def fold_of(adata, genes, held_out) -> ad.AnnData:
    fold = adata[:, genes].copy()
    fold.X = dense(fold.X)
    stmix.pp.split(fold, test=[held_out], val=0.1, seed=0)
    return fold


def leave_one_out(adata, data_dir, brains) -> list[dict]:
    rows = []
    for held_out in SECTIONS:
        genes = genes_for(adata, held_out, "top250", data_dir)
        fold = fold_of(adata, genes, held_out)
        ridge = stmix.tl.fit(fold, use_rep="stmix_embedding", head="ridge")
        stmix.tl.impute(fold, ridge, interval=LEVEL, progress=False)
        row = {"held_out": held_out, "model": "ridge", **scores(fold, held_out)}
        rows.append({**row, **flags(ridge, fold, held_out, brains["p224"], "p224")})
        print(rows[-1], flush=True)

        fold = fold_of(adata, genes, held_out)
        stmix.pp.neighbors(fold, 10)
        started = time.perf_counter()
        tuned = stmix.tl.fit(fold, backbone=LITE0, progress=False, **FINE_TUNE)
        row = {"held_out": held_out, "model": "fine-tuned", **scores(impute(fold, tuned), held_out)}
        row["fit_s"] = time.perf_counter() - started
        rows.append(
            {**row, **flags(tuned, fold, held_out, brains["stmix_patches"], "stmix_patches")}
        )
        print(rows[-1], flush=True)
    return rows


def impute(fold, model):
    stmix.tl.impute(fold, model, interval=LEVEL, progress=False)
    return fold


def within_sections(adata, seeds: dict[str, list[int]], done: pd.DataFrame) -> Iterator[dict]:
    """Random spots of one section: exchangeable with its validation spots.

    ``seeds``: the splits each model is measured on; rows of ``done`` (section, model, seed)
    are kept, not measured again. ``expected``: the coverage split conformal promises on
    average with the section's ``n_val`` validation spots, ⌈(n_val + 1)·0.9⌉ / (n_val + 1).
    """
    keys = ("section", "model", "seed")
    measured = (
        {tuple(row) for row in done[list(keys)].itertuples(index=False)} if len(done) else set()
    )
    for section in SECTIONS:
        one = adata[(adata.obs["library_id"] == section).to_numpy()].copy()
        del one.uns["stmix_embedding"]  # its record counts all sections' spots
        top = np.argsort(-dense(one.X).mean(axis=0), kind="stable")[:250]
        one = one[:, top].copy()
        one.X = dense(one.X)
        for name, chosen in seeds.items():
            for seed in chosen:
                if (section, name, seed) in measured:
                    continue
                row = {"section": section, "model": name, "seed": seed}
                row.update(within(one, name, seed))
                print(row, flush=True)
                yield row


def within(one: ad.AnnData, name: str, seed: int) -> dict:
    stmix.pp.split(one, train=0.3, val=0.2, seed=seed)
    if name == "ridge":
        model = stmix.tl.fit(one, use_rep="stmix_embedding", head="ridge")
    else:
        stmix.pp.neighbors(one, 10)
        model = stmix.tl.fit(one, backbone=LITE0, progress=False, seed=seed, **FINE_TUNE)
    stmix.tl.impute(one, model, interval=LEVEL, progress=False)
    stmix.tl.evaluate(one)
    metrics = one.uns["stmix_metrics"]
    n_val = int((one.obs["stmix_split"] == "val").sum())
    return {
        "n_val": n_val,
        "expected": math.ceil((n_val + 1) * LEVEL) / (n_val + 1),
        "coverage": metrics["coverage"],
        "width": metrics["width"],
        "pcc": metrics["pcc"],
    }


def cost(adata) -> dict:
    """impute alone against impute with interval, the fine-tuned network on C2's spots."""
    c2 = adata[(adata.obs["library_id"] == "C2").to_numpy()].copy()
    top = np.argsort(-dense(c2.X).mean(axis=0), kind="stable")[:250]
    c2 = c2[:, top].copy()
    stmix.pp.split(c2, seed=0)
    model = stmix.tl.fit(c2, backbone=LITE0, augment="none", epochs=2, progress=False)
    times = {}
    for label, interval in (("alone", None), ("interval", LEVEL), ("alone_again", None)):
        started = time.perf_counter()
        stmix.tl.impute(c2, model, interval=interval, progress=False)
        times[label] = time.perf_counter() - started
    alone = min(times["alone"], times["alone_again"])
    return {
        "impute_s": alone,
        "impute_interval_s": times["interval"],
        "ratio": times["interval"] / alone,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-loso", action="store_true", help="keep the measured LOSO rows")
    parser.add_argument("--ridge-seeds", type=int, default=10, help="within-section splits")
    parser.add_argument("--tuned-seeds", type=int, default=3, help="within-section splits")
    args = parser.parse_args()
    data_dir = Path(os.environ.get("STMIX_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()
    adata = load(data_dir)
    stmix.pp.patches(adata, size=224, key_added="p224", progress=False)
    stmix.tl.embed(adata, patches_key="p224", progress=False)
    stmix.pp.patches(adata, size=64, progress=False)
    name = RESULTS / f"uncertainty_{platform.node()}"
    loso, costs = Path(f"{name}.csv"), Path(f"{name}_cost.csv")
    if args.skip_loso and loso.is_file() and costs.is_file():
        rows, spent = pd.read_csv(loso).to_dict("records"), pd.read_csv(costs).iloc[0].to_dict()
    else:
        brains = {k: mouse_brain(data_dir, s, k) for k, s in (("p224", 224), ("stmix_patches", 64))}
        rows = leave_one_out(adata, data_dir, brains)
        pd.DataFrame(rows).to_csv(loso, index=False)
        spent = cost(adata)
        pd.DataFrame([spent]).to_csv(costs, index=False)
    within_csv = Path(f"{name}_within.csv")
    done = pd.read_csv(within_csv) if within_csv.is_file() else pd.DataFrame()
    seeds = {"ridge": list(range(args.ridge_seeds)), "fine-tuned": list(range(args.tuned_seeds))}
    for row in within_sections(adata, seeds, done):
        done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
        done.to_csv(within_csv, index=False)
    write(pd.DataFrame(rows), done, spent)


def write(loso: pd.DataFrame, within: pd.DataFrame, spent: dict) -> None:
    machine = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, CPU)"
    summary = within.groupby("model")[["expected", "coverage", "width", "pcc"]].mean()
    summary["splits"] = within.groupby("model").size()
    path = RESULTS / f"uncertainty_{platform.node()}.md"
    path.write_text(
        "# Intervals, spread and the flag of unfamiliar tissue\n\n"
        f"Command: `python benchmarks/uncertainty.py`  \nMachine: {machine}  \n"
        f"Date: {time.strftime('%Y-%m-%d')}\n\n"
        "## Leave one section out (90% intervals; AUROC of the flag against each kind)\n\n"
        + loso.round(3).to_markdown(index=False)
        + "\n\n## Within one section (random 30/20/50 splits, exchangeable spots)\n\n"
        "`expected`: the mean coverage split conformal gives with the section's `n_val` "
        "validation spots, ⌈(n_val + 1)·0.9⌉ / (n_val + 1) (between 0.9 and 0.9 + 1/(n_val + 1)); "
        "one split's coverage scatters around it (the genes share the same few validation spots)."
        "\n\nMean over sections and splits:\n\n"
        + summary.round(3).reset_index().to_markdown(index=False)
        + "\n\nEvery split:\n\n"
        + within.round(3).to_markdown(index=False)
        + "\n\n## Cost on C2 (fine-tuned Lite0, 64 px, same run)\n\n"
        + pd.DataFrame([spent]).round(3).to_markdown(index=False)
        + "\n"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
