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

import os
import platform
import sys
import time
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


def within_sections(adata) -> list[dict]:
    """Random spots of one section: exchangeable with its validation spots."""
    rows = []
    for section in SECTIONS:
        one = adata[(adata.obs["library_id"] == section).to_numpy()].copy()
        del one.uns["stmix_embedding"]  # its record counts all sections' spots
        top = np.argsort(-dense(one.X).mean(axis=0), kind="stable")[:250]
        one = one[:, top].copy()
        one.X = dense(one.X)
        stmix.pp.split(one, train=0.3, val=0.2, seed=0)
        for name in ("ridge", "fine-tuned"):
            if name == "ridge":
                model = stmix.tl.fit(one, use_rep="stmix_embedding", head="ridge")
            else:
                stmix.pp.neighbors(one, 10)
                model = stmix.tl.fit(one, backbone=LITE0, progress=False, **FINE_TUNE)
            stmix.tl.impute(one, model, interval=LEVEL, progress=False)
            stmix.tl.evaluate(one)
            metrics = one.uns["stmix_metrics"]
            rows.append(
                {
                    "section": section,
                    "model": name,
                    "coverage": metrics["coverage"],
                    "width": metrics["width"],
                    "pcc": metrics["pcc"],
                }
            )
            print(rows[-1], flush=True)
    return rows


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
    data_dir = Path(os.environ.get("STMIX_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()
    adata = load(data_dir)
    stmix.pp.patches(adata, size=224, key_added="p224", progress=False)
    stmix.tl.embed(adata, patches_key="p224", progress=False)
    stmix.pp.patches(adata, size=64, progress=False)
    brains = {k: mouse_brain(data_dir, s, k) for k, s in (("p224", 224), ("stmix_patches", 64))}
    done = RESULTS / f"uncertainty_{platform.node()}.csv"
    if "--skip-loso" in sys.argv and done.is_file():  # the leave-one-out rows of an earlier run
        rows = pd.read_csv(done).to_dict("records")
    else:
        rows = leave_one_out(adata, data_dir, brains)
        pd.DataFrame(rows).to_csv(done, index=False)
    within = within_sections(adata)
    spent = cost(adata)
    write(pd.DataFrame(rows), pd.DataFrame(within), spent)


def write(loso: pd.DataFrame, within: pd.DataFrame, spent: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    name = f"uncertainty_{platform.node()}"
    loso.to_csv(RESULTS / f"{name}.csv", index=False)
    within.to_csv(RESULTS / f"{name}_within.csv", index=False)
    machine = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, CPU)"
    (RESULTS / f"{name}.md").write_text(
        "# Intervals, spread and the flag of unfamiliar tissue\n\n"
        f"Command: `python benchmarks/uncertainty.py`  \nMachine: {machine}  \n"
        f"Date: {time.strftime('%Y-%m-%d')}\n\n"
        "## Leave one section out (90% intervals; AUROC of the flag against each kind)\n\n"
        + loso.round(3).to_markdown(index=False)
        + "\n\n## Within one section (random spots, exchangeable with the validation spots)\n\n"
        + within.round(3).to_markdown(index=False)
        + "\n\n## Cost on C2 (fine-tuned Lite0, 64 px, same run)\n\n"
        + pd.DataFrame([spent]).round(3).to_markdown(index=False)
        + "\n"
    )
    print(f"wrote {RESULTS / name}.md")


if __name__ == "__main__":
    main()
