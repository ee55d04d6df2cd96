"""Does context help, and does it survive another stain? Leave one section out over HER2ST.

    STMIX_DATA_DIR=../shared/data python benchmarks/context.py              # both parts
    STMIX_DATA_DIR=../shared/data python benchmarks/context.py --part context
    STMIX_DATA_DIR=../shared/data python benchmarks/context.py --part tuned-context --seeds 0 1 2

The protocol of ``benchmarks/probe.py``: C2-C6 log-normalised, the top 250 genes by mean on the
training sections, a tenth of each training section validating (seeds 0-2), Lite0 features of
224 px patches (its packaged ImageNet weights), the HEST ridge probe; mean PCC over genes on
the held-out section.

``context``: the ridge on the spot's features alone, with the mean of its 6 nearest spots'
(same section), with a patch three times wider (``tl.embed(scales=(1, 3), neighbors=6)``),
and both; each also on stain-normalised patches (``pp.normalize_stain`` onto the training
spots' colours: ``reinhard`` and ``macenko``).

``stain``: the **stain-shift protocol**: the held-out section re-coloured as another lab's
stain, a fixed shift in Ruifrok and Johnston's HED space (haematoxylin × 1.3 + 0.05,
eosin × 0.7 − 0.05, DAB unchanged, on every patch and wider patch), predicted by the same models:
how much PCC each pipeline loses, and how much normalisation (ridge and fine-tuned) or HED
jitter in training (fine-tuned, σ = 0.05) gets back. The fine-tuned network: Lite0 at 64 px
with SNR-ST-Mix, the README's many-sections budget (12 epochs, batch 16, patience 4), seed 0.

``tuned-context``: the same fine-tuned network on the spot alone and with the context branch
(``tl.fit(scales=(1, 3))``: the spot's 64 px patch and one of three times its width, read by one
encoder and fused before the head), seeds 0-2, scored on the held-out section as it is and
re-coloured by the same shift (both fields).

Writes ``benchmarks/results/context_<machine>.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scipy.stats import wilcoxon

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from sections import SECTIONS, genes_for, load  # noqa: E402

import stmix  # noqa: E402
from stmix import _metrics  # noqa: E402
from stmix.nn.images import to_float  # noqa: E402
from stmix.nn.stain import from_hed, to_hed  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SHIFT_SCALE = torch.tensor([1.3, 0.7, 1.0]).view(1, 3, 1, 1)
SHIFT_BIAS = torch.tensor([0.05, -0.05, 0.0]).view(1, 3, 1, 1)
ROWS = {"spot": ["spot"], "+neighbours": ["spot", "neighbors_6"], "+3x": ["spot", "scale_3"]}
ROWS["+both"] = ["spot", "scale_3", "neighbors_6"]
FINE_TUNE = {"augment": "snr", "epochs": 12, "batch_size": 16, "plan_kwargs": {"patience": 4}}


def shifted(patches: np.ndarray) -> np.ndarray:
    """uint8 patches re-coloured by the fixed HED shift."""
    out = np.empty_like(patches)
    for start in range(0, len(patches), 64):
        x = to_float(torch.from_numpy(np.ascontiguousarray(patches[start : start + 64])))
        y = from_hed(to_hed(x) * SHIFT_SCALE + SHIFT_BIAS)
        out[start : start + 64] = (y.permute(0, 2, 3, 1) * 255).round().byte().numpy()
    return out


def normalised(
    patches: np.ndarray, sections: np.ndarray, target: dict, method: str = "reinhard"
) -> np.ndarray:
    """Each section's patches moved onto ``target`` (as ``pp.normalize_stain(method=)``)."""
    from stmix.pp._stain import _colours, _move

    out = patches.copy()
    for name in np.unique(sections):
        rows = sections == name
        out[rows] = _move(method, patches[rows], _colours(method, patches[rows]), target)
    return out


def features(patches: np.ndarray) -> np.ndarray:
    """Lite0 features (224 px, packaged ImageNet weights) of uint8 patches."""
    spots = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(patches))]))
    spots.obsm["p"] = patches
    spots.uns["p"] = {"writer": "stmix.pp.patches", "params": {"size": patches.shape[1]}}
    stmix.tl.embed(spots, patches_key="p", progress=False)
    return spots.obsm["stmix_embedding"]


class Views:
    """The features of every section for one way of handling stain, with their context."""

    def __init__(self, adata, p1: np.ndarray, p3: np.ndarray):
        self.adata, self.p1, self.p3 = adata, p1, p3
        self.sections = adata.obs["library_id"].astype(str).to_numpy()

    def parts(
        self, rows: np.ndarray, *, shift: bool, target: dict | None, method: str = "reinhard"
    ) -> dict:
        """spot, scale_3 and neighbors_6 features of all spots (``rows`` re-coloured)."""
        out = {}
        for name, patches in (("spot", self.p1), ("scale_3", self.p3)):
            patches = patches.copy()
            if shift:
                patches[rows] = shifted(patches[rows])
            if target is not None:
                patches = normalised(patches, self.sections, target, method)
            out[name] = features(patches)
        out["neighbors_6"] = stmix.tl._context.neighbourhood(
            self.adata, out["spot"], 6, "library_id"
        )
        return out


def ridge_rows(fold, parts_clean, parts_shifted, held_out, seed, stain) -> list[dict]:
    rows = []
    for row, names in ROWS.items():
        fold.obsm["rep"] = np.concatenate([parts_clean[n] for n in names], axis=1)
        model = stmix.tl.fit(fold, use_rep="rep", head="ridge", seed=seed)
        clean = score(fold, model, held_out)
        fold.obsm["rep"] = np.concatenate([parts_shifted[n] for n in names], axis=1)
        moved = score(fold, model, held_out)
        rows.append(
            {
                "held_out": held_out,
                "seed": seed,
                "model": "ridge",
                "features": row,
                "stain": stain,
                "pcc": clean,
                "pcc_shifted": moved,
            }
        )
    return rows


def score(fold, model, held_out) -> float:
    stmix.tl.impute(fold, model, progress=False)
    stmix.tl.evaluate(fold)
    return float(fold.uns["stmix_metrics"]["by_library"][held_out]["pcc"])


def context_part(adata, data_dir, views, seeds, stains) -> list[dict]:
    """Ridge rows for each held-out section, seed and way of handling stain in ``stains``."""
    rows = []
    for held_out in SECTIONS:
        genes = genes_for(adata, held_out, "top250", data_dir)
        held = (adata.obs["library_id"] == held_out).to_numpy()
        handled = {}
        for stain in stains:
            method = None if stain == "none" else stain
            target = None
            if method:  # the training sections' colours
                target = stmix.pp._stain._colours(method, views.p1[~held])
            handled[stain] = tuple(
                views.parts(held, shift=shift, target=target, method=method or "reinhard")
                for shift in (False, True)
            )
        for seed in seeds:
            fold = adata[:, genes].copy()
            fold.X = np.asarray(fold.X.todense())
            stmix.pp.split(fold, test=[held_out], val=0.1, seed=seed)
            for stain, (clean, moved) in handled.items():
                rows += ridge_rows(fold, clean, moved, held_out, seed, stain)
                print(rows[-1], flush=True)
    return rows


def stain_part(adata, data_dir, p64: np.ndarray, done: set, save) -> list[dict]:
    """The fine-tuned network: no stain handling, HED jitter in training, normalised patches.

    Rows of ``done`` ((held-out section, stain) pairs already measured) are skipped; ``save``
    keeps each new row as soon as it is measured (a fit takes minutes here).
    """
    rows = []
    sections = adata.obs["library_id"].astype(str).to_numpy()
    for held_out in SECTIONS:
        genes = genes_for(adata, held_out, "top250", data_dir)
        held = sections == held_out
        target = stmix.pp._stain.colours(p64[~held])
        for stain in ("none", "jitter", "reinhard"):
            if (held_out, stain) in done:
                continue
            fold = adata[:, genes].copy()
            fold.X = np.asarray(fold.X.todense())
            patches = normalised(p64, sections, target) if stain == "reinhard" else p64
            fold.obsm["stmix_patches"] = patches.copy()
            fold.uns["stmix_patches"] = adata.uns["p64"]
            stmix.pp.split(fold, test=[held_out], val=0.1, seed=0)
            stmix.pp.neighbors(fold, 10)
            extra = {"plan_kwargs": {"patience": 4, "stain": 0.05}} if stain == "jitter" else {}
            started = time.perf_counter()
            model = stmix.tl.fit(fold, progress=False, **{**FINE_TUNE, **extra})
            seconds = time.perf_counter() - started
            clean = score(fold, model, held_out)
            moved = p64.copy()
            moved[held] = shifted(p64[held])
            if stain == "reinhard":
                moved = normalised(moved, sections, target)
            fold.obsm["stmix_patches"] = moved
            rows.append(
                {
                    "held_out": held_out,
                    "seed": 0,
                    "model": "fine-tuned",
                    "features": "spot",
                    "stain": stain,
                    "pcc": clean,
                    "pcc_shifted": score(fold, model, held_out),
                    "fit_s": seconds,
                }
            )
            print(rows[-1], flush=True)
            save(rows)
    return rows


def tuned_context_part(adata, data_dir, seeds, done: set, save) -> list[dict]:
    """The fine-tuned network on the spot alone and with a field three times wider.

    ``tl.fit(scales=(1, 3))``: one encoder reads the spot's 64 px patch and a 64 px patch of
    three times the spot's width around it, their features fused before the head; SNR-ST-Mix
    mixes both fields of a pair with one ratio. Scored on the held-out section as it is and
    re-coloured (both fields shifted). Rows in ``done`` ((held-out, seed, features)) are skipped.
    """
    rows = []
    sections = adata.obs["library_id"].astype(str).to_numpy()
    p64, p64x3 = adata.obsm["p64"], adata.obsm["p64x3"]
    for seed in seeds:
        for held_out in SECTIONS:
            genes = genes_for(adata, held_out, "top250", data_dir)
            held = sections == held_out
            for features, scales in (("spot", (1,)), ("+3x", (1, 3))):
                if (held_out, seed, features) in done:
                    continue
                fold = adata[:, genes].copy()
                fold.X = np.asarray(fold.X.todense())
                fold.obsm["stmix_patches"] = p64.copy()
                fold.uns["stmix_patches"] = adata.uns["p64"]
                stmix.pp.split(fold, test=[held_out], val=0.1, seed=seed)
                stmix.pp.neighbors(fold, 10)
                started = time.perf_counter()
                model = stmix.tl.fit(fold, scales=scales, seed=seed, progress=False, **FINE_TUNE)
                seconds = time.perf_counter() - started
                parts = [p64[held]] + ([p64x3[held]] if len(scales) > 1 else [])
                truth = fold.X[held]
                rows.append(
                    {
                        "held_out": held_out,
                        "seed": seed,
                        "model": "fine-tuned",
                        "features": features,
                        "stain": "none",
                        "pcc": direct(model, parts, truth),
                        "pcc_shifted": direct(model, [shifted(p) for p in parts], truth),
                        "fit_s": seconds,
                    }
                )
                print(rows[-1], flush=True)
                save(rows)
    return rows


def direct(model, parts: list[np.ndarray], truth: np.ndarray) -> float:
    """Mean PCC over genes of the model's clipped predictions, as ``tl.evaluate`` scores them."""
    pred = np.maximum(model.predict(np.concatenate(parts, axis=-1)), 0.0)
    return _metrics.summary(_metrics.gene_metrics(truth, pred))["pcc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part", choices=("context", "stain", "tuned-context", "all"), default="all"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--stains",
        nargs="+",
        default=["none", "reinhard", "macenko"],
        choices=("none", "reinhard", "macenko"),
        help="the ridge's ways of handling stain (rows already measured are replaced)",
    )
    args = parser.parse_args()
    data_dir = Path(os.environ.get("STMIX_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()
    adata = load(data_dir)
    csv = RESULTS / f"context_{platform.node()}.csv"
    done = pd.read_csv(csv) if csv.is_file() else pd.DataFrame()
    rows = []
    if args.part in ("context", "all"):
        p1 = stmix.pp.patches(adata, size=224, copy=True, progress=False).obsm["stmix_patches"]
        p3 = stmix.pp.patches(adata, size=224, spot_scale=3, copy=True, progress=False)
        rows += context_part(
            adata, data_dir, Views(adata, p1, p3.obsm["stmix_patches"]), args.seeds, args.stains
        )
    if args.part in ("stain", "all"):
        stmix.pp.patches(adata, size=64, key_added="p64", progress=False)
        tuned = done[done["model"] == "fine-tuned"] if len(done) else done
        measured = set(zip(tuned.get("held_out", []), tuned.get("stain", []), strict=True))
        rows += stain_part(
            adata, data_dir, adata.obsm["p64"], measured, lambda new: keep(done, new, csv)
        )
    if args.part in ("tuned-context", "all"):
        for key, scale in (("p64", 1), ("p64x3", 3)):
            stmix.pp.patches(adata, size=64, spot_scale=scale, key_added=key, progress=False)
        tuned = done[done["model"] == "fine-tuned"] if len(done) else done
        measured = {
            (h, int(s), f)
            for h, s, f, stain in zip(
                tuned.get("held_out", []),
                tuned.get("seed", []),
                tuned.get("features", []),
                tuned.get("stain", []),
                strict=True,
            )
            if stain == "none"
        }
        rows += tuned_context_part(
            adata, data_dir, args.seeds, measured, lambda new: keep(done, new, csv)
        )
    keep(done, rows, csv)


def keep(done: pd.DataFrame, rows: list[dict], csv: Path) -> None:
    """The measured rows with the new ones (a new row replaces its earlier measurement)."""
    frame = pd.concat([done, pd.DataFrame(rows)], ignore_index=True)
    frame = frame.drop_duplicates(["held_out", "seed", "model", "features", "stain"], keep="last")
    frame.to_csv(csv, index=False)
    summarise(frame, csv.with_suffix(".md"))


def summarise(frame: pd.DataFrame, path: Path) -> None:
    frame = frame.assign(loss=frame["pcc"] - frame["pcc_shifted"])
    table = (
        frame.groupby(["model", "features", "stain"])[["pcc", "pcc_shifted", "loss"]]
        .mean()
        .round(3)
        .reset_index()
    )
    lines = [
        "# Context and stain, leave one section out (HER2ST C2-C6)",
        "",
        "Command: `python benchmarks/context.py`  ",
        f"Machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cores, CPU)  ",
        f"Date: {time.strftime('%Y-%m-%d')}",
        "",
        "Mean PCC over genes on the held-out section, mean over sections (ridge: x seeds 0-2; "
        "fine-tuned: seeds 0-2 without stain handling, seed 0 with it); `pcc_shifted`: the "
        "held-out section re-coloured (the fixed HED shift); `loss` = pcc - pcc_shifted.",
        "",
        table.to_markdown(index=False),
        "",
    ]
    lines += paired(frame) + paired_tuned(frame) + recovered(frame)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def paired(frame: pd.DataFrame) -> list[str]:
    """The best row with context against the best without, paired over sections x seeds."""
    ridge = frame[frame["model"] == "ridge"]
    if ridge.empty:
        return []
    out = ["## Paired over held-out sections x seeds (Wilcoxon signed-rank)", ""]
    for column in ("pcc", "pcc_shifted"):
        means = ridge.groupby(["features", "stain"])[column].mean()
        plain = means[[i for i in means.index if i[0] == "spot"]].idxmax()
        context = means[[i for i in means.index if i[0] != "spot"]].idxmax()
        key = ["held_out", "seed"]
        a = ridge[(ridge["features"] == plain[0]) & (ridge["stain"] == plain[1])].set_index(key)
        b = ridge[(ridge["features"] == context[0]) & (ridge["stain"] == context[1])].set_index(key)
        diff = (b[column] - a.loc[b.index, column]).to_numpy()
        p = wilcoxon(diff).pvalue if np.any(diff != 0) else 1.0
        out.append(
            f"- `{column}`: best with context {context} {means[context]:.3f} against best "
            f"without {plain} {means[plain]:.3f}: median difference {np.median(diff):+.3f} over "
            f"{len(diff)} pairs, p = {p:.3g}"
        )
    return [*out, ""]


def paired_tuned(frame: pd.DataFrame) -> list[str]:
    """The fine-tuned network with the wider field against the spot alone, same folds."""
    tuned = frame[(frame["model"] == "fine-tuned") & (frame["stain"] == "none")]
    key = ["held_out", "seed"]
    spot = tuned[tuned["features"] == "spot"].set_index(key)
    wide = tuned[tuned["features"] == "+3x"].set_index(key)
    both = wide.index.intersection(spot.index)
    if len(both) == 0:
        return []
    out = ["## Fine-tuned: the context branch against the spot alone (same folds)", ""]
    for column in ("pcc", "pcc_shifted"):
        diff = (wide.loc[both, column] - spot.loc[both, column]).to_numpy()
        p = wilcoxon(diff).pvalue if len(diff) > 1 and np.any(diff != 0) else float("nan")
        out.append(
            f"- `{column}`: +3x {wide.loc[both, column].mean():.3f} against spot "
            f"{spot.loc[both, column].mean():.3f}: median difference {np.median(diff):+.3f} "
            f"over {len(diff)} pairs, p = {p:.3g}"
        )
    seconds = wide.loc[both, "fit_s"].mean() / spot.loc[both, "fit_s"].mean()
    return [*out, f"- fit time, +3x against spot: {seconds:.1f}x (machine shared)", ""]


def recovered(frame: pd.DataFrame) -> list[str]:
    """Each stain handling's loss under the shift against no handling's, same rows."""
    out = ["## Loss under the stain shift, with handling against without", ""]
    frame = frame.assign(loss=frame["pcc"] - frame["pcc_shifted"])
    for (model, features), rows in frame.groupby(["model", "features"]):
        plain = rows[rows["stain"] == "none"].set_index(["held_out", "seed"])["loss"]
        for stain in sorted(set(rows["stain"]) - {"none"}):
            handled = rows[rows["stain"] == stain].set_index(["held_out", "seed"])["loss"]
            both = handled.index.intersection(plain.index)
            if len(both) == 0:
                continue
            lost, kept = plain[both].mean(), handled[both].mean()
            share = f"{kept / lost:.2f} of it" if lost > 0.002 else "no loss to recover"
            out.append(
                f"- {model}, {features}, {stain}: loss {kept:.3f} against {lost:.3f} without "
                f"({share}; at most half asked) over {len(both)} pairs"
            )
    return [*out, ""]


if __name__ == "__main__":
    main()
