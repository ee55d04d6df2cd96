"""Bad inputs and faults, tried as a careful user would; each probe's outcome in one table.

    STMIX_DATA_DIR=../shared/data python benchmarks/robustness.py

Writes ``benchmarks/results/robustness.md``: for each probe, what it did before the package
learnt to refuse it (as first reported) and what it does now (measured by this script: the
error's type and first line, or what came out). A probe passes when the outcome is a clear
error (or a correct conversion) and the AnnData, the files and the folders are as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc
from PIL import Image

import stmix

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(os.environ.get("STMIX_DATA_DIR", "../shared/data")).resolve()
STMIX = [str(Path(sys.executable).parent / "stmix")]
TINY = {"backbone": "test_efficientnet", "pretrained": False, "epochs": 1, "progress": False}
ROWS: list[tuple[str, str, str, bool]] = []


def outcome(call) -> tuple[str, bool]:
    """``(what happened, whether it raised)``."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = call()
    except BaseException as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"{type(error).__name__}: {first[:160]}", True
    said = [str(w.message).splitlines()[0][:120] for w in caught if "stmix" in str(w.filename)]
    note = f" (warns: {said[0]})" if said else ""
    return f"no error{note}; {result!s:.120}" if result is not None else f"no error{note}", False


def probe(name: str, before: str, call, *, expect_error: bool = True, check=None) -> None:
    text, raised = outcome(call)
    ok = raised == expect_error
    if check is not None:
        try:
            ok = ok and bool(check())
        except Exception as error:
            ok, text = False, f"{text}; check failed: {error}"
    ROWS.append((name, before, text, ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {text}", flush=True)


def cli(*args: str, limit_kb: int | None = None) -> subprocess.CompletedProcess:
    command = " ".join(map(_quote, [*STMIX, *args]))
    if limit_kb:
        command = f"ulimit -f {limit_kb}; {command}"
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def cli_probe(name: str, before: str, args, *, expect_fail=True, check=None, limit_kb=None):
    done = cli(*args, limit_kb=limit_kb)
    last = (done.stderr.strip().splitlines() or [""])[-1]
    traceback = "Traceback" in done.stderr
    text = f"exit {done.returncode}: {last[:160]}" + (" [TRACEBACK]" if traceback else "")
    ok = (done.returncode != 0) == expect_fail and not traceback
    if check is not None:
        ok = ok and bool(check(done))
    ROWS.append((name, before, text, ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {text}", flush=True)


def same(a: ad.AnnData, b: ad.AnnData) -> bool:
    """The AnnData was left as it was (keys and X)."""
    return (
        set(a.obsm) == set(b.obsm)
        and set(a.uns) == set(b.uns)
        and set(a.layers) == set(b.layers)
        and set(a.obs) == set(b.obs)
        and np.array_equal(
            np.asarray(a.X[:5].todense() if hasattr(a.X, "todense") else a.X[:5]),
            np.asarray(b.X[:5].todense() if hasattr(b.X, "todense") else b.X[:5]),
        )
    )


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="stmix_probe_"))
    c2 = stmix.datasets.her2st("C2", root=DATA / "her2st")
    c2.layers["counts"] = c2.X.copy()
    sc.pp.normalize_total(c2, target_sum=1e4)
    sc.pp.log1p(c2)
    stmix.pp.select_genes(c2, 16, method="mean")
    c2 = c2[:, c2.var["stmix_selected"]].copy()
    stmix.pp.patches(c2, size=32, progress=False)
    stmix.pp.split(c2, seed=0)
    stmix.pp.neighbors(c2, 5)
    model = stmix.tl.fit(c2, **TINY)
    stmix.tl.impute(c2, model, progress=False)
    model.save(work / "model")
    c2.write_h5ad(work / "c2.h5ad")
    unsplit = c2.copy()
    del unsplit.obs["stmix_split"]
    unsplit.write_h5ad(work / "unsplit.h5ad")

    # 1. a failed CLI write
    existing = work / "existing.h5ad"
    shutil.copy(work / "c2.h5ad", existing)
    before_bytes = existing.read_bytes()
    cli_probe(
        "impute --out existing.h5ad, write fails (ulimit -f 2000)",
        "truncated file that read_h5ad cannot open",
        [
            "impute",
            str(work / "c2.h5ad"),
            "--model",
            str(work / "model"),
            "--out",
            str(existing),
            "--quiet",
        ],
        limit_kb=2000,
        check=lambda done: existing.read_bytes() == before_bytes,
    )
    fresh = work / "fresh.h5ad"
    cli_probe(
        "impute --out new.h5ad, write fails",
        "partial file left behind",
        [
            "impute",
            str(work / "c2.h5ad"),
            "--model",
            str(work / "model"),
            "--out",
            str(fresh),
            "--quiet",
        ],
        limit_kb=2000,
        check=lambda done: not fresh.exists() and not list(work.glob(".fresh*")),
    )
    # 2. a model folder with the user's files
    user = work / "user_dir"
    user.mkdir()
    (user / "config.json").write_text('{"mine": true}')
    cli_probe(
        "fit --model DIR holding the user's config.json",
        "overwritten, exit 0",
        [
            "fit",
            str(work / "c2.h5ad"),
            "--model",
            str(user),
            "--backbone",
            "test_efficientnet",
            "--no-pretrained",
            "--epochs",
            "1",
            "--size",
            "32",
            "--quiet",
        ],
        check=lambda done: json.loads((user / "config.json").read_text()) == {"mine": True},
    )
    # 3. keys stmix did not write
    a = c2.copy()
    probe(
        "tl.fit(key_added='spatial')",
        "replaced uns['spatial'] (the images)",
        lambda: stmix.tl.fit(a, key_added="spatial", **TINY),
        check=lambda: same(a, c2),
    )
    probe(
        "tl.impute(key_added='counts'), the user's layers['counts']",
        "replaced the counts",
        lambda: stmix.tl.impute(a, model, key_added="counts", progress=False),
        check=lambda: abs(a.layers["counts"] - c2.layers["counts"]).sum() == 0,
    )
    # 4. bounds before allocation
    b = c2.copy()
    probe(
        "pp.patches(spot_diameter=1e6)",
        "killed at 22 GB",
        lambda: stmix.pp.patches(b, size=32, spot_diameter=1e6, progress=False),
        check=lambda: same(b, c2),
    )
    probe(
        "pp.patches(size=100000)",
        "numpy asked for 838 GiB",
        lambda: stmix.pp.patches(b, size=100000, progress=False),
        check=lambda: same(b, c2),
    )
    # 5. silent wrong results
    library = c2.uns["spatial"]["C2"]
    image = np.asarray(library["images"]["hires"])
    gray16 = (image.mean(axis=2) * 257).astype(np.uint16)
    path16 = work / "gray16.png"
    Image.fromarray(gray16).save(path16)
    c = c2.copy()
    scale = library["scalefactors"]["tissue_hires_scalef"]
    c.obsm["spatial_hires"] = c.obsm["spatial"] * scale

    path8 = work / "gray8.png"
    Image.fromarray(np.round(gray16 / 257).astype(np.uint8)).save(path8)
    diameter = library["scalefactors"]["spot_diameter_fullres"] * scale

    def sixteen():
        for path, key in ((path16, "p16"), (path8, "p8")):
            stmix.pp.patches(
                c,
                size=32,
                image=str(path),
                spatial_key="spatial_hires",
                spot_diameter=diameter,
                progress=False,
                key_added=key,
            )
        return (
            f"patch mean {c.obsm['p16'].mean():.1f}; the same image in 8 bits: "
            f"{c.obsm['p8'].mean():.1f}"
        )

    probe(
        "16-bit grayscale image",
        "white patches (PIL clips)",
        sixteen,
        expect_error=False,
        check=lambda: abs(c.obsm["p16"].mean() - c.obsm["p8"].mean()) < 2,
    )
    d = c2.copy()
    d.uns["spatial"]["C2"]["scalefactors"]["tissue_hires_scalef"] = 0.0
    del d.uns["spatial"]["C2"]["metadata"]
    probe(
        "scale factor 0",
        "every patch the same colour",
        lambda: stmix.pp.patches(d, size=32, progress=False, key_added="p0"),
        check=lambda: "p0" not in d.obsm,
    )
    for name, before, kwargs in (
        ("min_lr above lr", "trained at lr 1.0", {"plan_kwargs": {"min_lr": 1.0}, "lr": 1e-3}),
        ("negative loss_weights", "accepted", {"plan_kwargs": {"loss_weights": {"edge": -1.0}}}),
        ("alpha=inf", "accepted", {"plan_kwargs": {"alpha": float("inf")}}),
    ):
        e = c2.copy()
        probe(
            f"tl.fit, {name}",
            before,
            lambda e=e, kw=kwargs: stmix.tl.fit(e, **{**TINY, **kw}),
            check=lambda e=e: same(e, c2),
        )
    probe(
        "pl.maps(split='nope')",
        "drew a figure",
        lambda: stmix.pl.maps(c2, model.genes[:1], split="nope", show=False),
    )
    probe(
        "tl.compare(seeds=[])",
        "empty table",
        lambda: stmix.tl.compare(c2, ["none"], seeds=[], **TINY),
    )
    f = c2.copy()
    train = np.flatnonzero(f.obs["stmix_split"] == "train")
    f.obsm["spatial"][train[1]] = f.obsm["spatial"][train[0]]
    probe(
        "duplicated coordinates (pp.neighbors)",
        "only a warning",
        lambda: stmix.pp.neighbors(f, 5),
        check=lambda: same(f, c2),
    )
    # 6. raw tracebacks
    truncated = work / "truncated.jpg"
    source = Path(library["metadata"]["source_image_path"])
    truncated.write_bytes(source.read_bytes()[:20000])
    g = c2.copy()
    probe(
        "truncated JPEG",
        "PIL traceback",
        lambda: stmix.pp.patches(g, size=32, image=str(truncated), progress=False, key_added="pt"),
        check=lambda: same(g, c2),
    )
    garbage = work / "garbage.jpg"
    garbage.write_bytes(b"not an image at all" * 100)
    probe(
        "garbage JPEG",
        "PIL traceback",
        lambda: stmix.pp.patches(g, size=32, image=str(garbage), progress=False, key_added="pt"),
        check=lambda: same(g, c2),
    )
    h = c2.copy()
    h.var_names = [h.var_names[0]] * h.n_vars
    probe("duplicated var_names (tl.fit)", "pandas traceback", lambda: stmix.tl.fit(h, **TINY))
    probe(
        "tl.impute(batch_size=0)",
        "raw traceback",
        lambda: stmix.tl.impute(c2.copy(), model, batch_size=0, progress=False),
    )
    probe(
        "tl.complete(batch_size=0)",
        "raw traceback",
        lambda: stmix.tl.complete(c2.copy(), batch_size=0, epochs=1, progress=False),
    )
    probe(
        "tl.complete(d_model=63)",
        "raw traceback",
        lambda: stmix.tl.complete(c2.copy(), d_model=63, epochs=1, progress=False),
    )
    broken = work / "broken_model"
    shutil.copytree(work / "model", broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    probe("corrupt model.safetensors", "raw traceback", lambda: stmix.tl.load(broken))

    def with_config(edit, name):
        folder = work / name
        shutil.copytree(work / "model", folder)
        config = json.loads((folder / "config.json").read_text())
        edit(config["config"])
        (folder / "config.json").write_text(json.dumps(config))
        return folder

    bad_json = with_config(lambda c: None, "bad_json")
    (bad_json / "config.json").write_text("{")
    probe("config.json not JSON", "raw traceback", lambda: stmix.tl.load(bad_json))
    probe(
        "config.json without genes",
        "raw traceback",
        lambda: stmix.tl.load(with_config(lambda c: c.pop("genes"), "no_genes")),
    )
    probe(
        "wrong gene count in config.json",
        "torch size mismatch",
        lambda: stmix.tl.load(with_config(lambda c: c["genes"].append("EXTRA"), "more_genes")),
    )
    one_train = c2.copy()
    labels = np.array(["test"] * one_train.n_obs, dtype=object)
    labels[:17] = "train"
    labels[17:25] = "val"
    one_train.obs["stmix_split"] = labels
    one_train.obs["stmix_split"] = one_train.obs["stmix_split"].astype("category")
    probe(
        "a training batch of one spot (17 spots, batch 16)",
        "BatchNorm: Expected more than 1 value per channel",
        lambda: stmix.tl.fit(one_train, batch_size=16, augment="none", **TINY),
        expect_error=False,
    )
    # 7. load trusts config.json
    for name, edit in (
        ("patch_size -3", lambda c: c.__setitem__("patch_size", -3)),
        ("patch_size 1e9", lambda c: c.__setitem__("patch_size", 10**9)),
        (
            "duplicated gene list",
            lambda c: c.__setitem__("genes", [c["genes"][0]] * len(c["genes"])),
        ),
    ):
        probe(
            f"tl.load, {name}",
            "accepted",
            lambda name=name, edit=edit: stmix.tl.load(with_config(edit, name.replace(" ", "_"))),
        )
    probe(
        "tl.load, stmix_version 99.0",
        "accepted silently",
        lambda: stmix.tl.load(
            with_config(lambda c: c.__setitem__("stmix_version", "99.0"), "future")
        ),
        expect_error=False,
        check=lambda: True,
    )
    # 8. the CLI in its own words
    text = work / "notes.txt"
    text.write_text("hello")
    cli_probe(
        "impute on a non-h5ad input",
        "traceback",
        ["impute", str(text), "--model", str(work / "model"), "--out", str(work / "x.h5ad")],
    )
    cli_probe(
        "--out that is a directory",
        "traceback",
        ["impute", str(work / "c2.h5ad"), "--model", str(work / "model"), "--out", str(work)],
    )
    cli_probe(
        "evaluate --csv into a missing folder",
        "traceback",
        ["evaluate", str(work / "c2.h5ad"), "--csv", str(work / "missing" / "x.csv")],
        expect_fail=False,
        check=lambda done: (work / "missing" / "x.csv").is_file(),
    )
    cli_probe(
        "evaluate on an unsplit file",
        "'run stmix.pp.split' (Python advice)",
        ["evaluate", str(work / "unsplit.h5ad")],
        check=lambda done: "--split all" in done.stderr,
    )
    raw = c2.copy()
    raw.X = raw.layers["counts"]
    raw.write_h5ad(work / "raw.h5ad")
    cli_probe(
        "evaluate on raw counts",
        "MSE 615, no warning",
        ["evaluate", str(work / "raw.h5ad")],
        expect_fail=False,
        check=lambda done: "counts" in (done.stdout + done.stderr).lower(),
    )
    # 9. the size of the predictions
    size_mb = (work / "c2.h5ad").stat().st_size / 1e6
    whole = stmix.datasets.her2st("C2", root=DATA / "her2st")
    sc.pp.normalize_total(whole, target_sum=1e4)
    sc.pp.log1p(whole)
    plain = whole.copy()
    whole.obsm["stmix_patches"] = c2.obsm["stmix_patches"]  # the same spots' patches
    whole.uns["stmix_patches"] = c2.uns["stmix_patches"]
    stmix.tl.impute(whole, model, progress=False)  # 16 genes predicted of the section's thousands
    del whole.obsm["stmix_patches"], whole.uns["stmix_patches"]
    whole.write_h5ad(work / "with.h5ad")
    plain.write_h5ad(work / "without.h5ad")
    growth = ((work / "with.h5ad").stat().st_size - (work / "without.h5ad").stat().st_size) / 1e6
    ROWS.append(
        (
            "predictions stored in the h5ad",
            "dense n_obs × n_vars float32 layer, 98% NaN (44 MB for a 250-gene section)",
            f"layers['stmix'], CSR of the predicted columns: +{growth:.2f} MB for 16 genes "
            f"(probe file {size_mb:.1f} MB)",
            growth < 1,
        )
    )

    round_two(work, c2, model)

    lines = [
        "# Robustness probes",
        "",
        "Command: `STMIX_DATA_DIR=../shared/data python benchmarks/robustness.py`  ",
        f"Passed: {sum(r[3] for r in ROWS)} of {len(ROWS)}",
        "",
        "| probe | before | now | ok |",
        "| --- | --- | --- | --- |",
    ]
    for name, before, now, ok in ROWS:
        now = now.replace("|", "\\|").replace(str(work), "<tmp>")
        lines.append(f"| {name} | {before} | {now} | {'yes' if ok else '**no**'} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "robustness.md").write_text("\n".join(lines) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {RESULTS / 'robustness.md'}")


def round_two(work: Path, c2: ad.AnnData, model) -> None:
    """Foreign keys, empty keys, outputs over each other, silent wrong results, raw errors."""
    import squidpy as sq
    import torch

    theirs = c2.copy()
    sc.pp.pca(theirs, n_comps=10)
    sc.pp.neighbors(theirs, n_neighbors=5)
    sc.tl.leiden(theirs, flavor="igraph", n_iterations=2)
    sq.gr.spatial_neighbors(theirs, n_neighs=5, coord_type="generic")
    kept = theirs.copy()
    for name, call in [
        (
            "pp.split(key_added='leiden') after sc.tl.leiden",
            lambda: stmix.pp.split(theirs, key_added="leiden"),
        ),
        (
            "pp.neighbors(key_added='spatial') after sq.gr.spatial_neighbors",
            lambda: stmix.pp.neighbors(theirs, 5, key_added="spatial"),
        ),
        (
            "tl.fit(key_added='neighbors') after sc.pp.neighbors",
            lambda: stmix.tl.fit(theirs, key_added="neighbors", **TINY),
        ),
        ("tl.embed(key_added='pca')", lambda: stmix.tl.embed(theirs, key_added="pca", **_embed())),
    ]:
        probe(name, "replaced scanpy's / squidpy's result", call, check=lambda: same(theirs, kept))
    probe(
        "tl.impute(key_added='')",
        "write_h5ad wrote a file read_h5ad cannot read",
        lambda: stmix.tl.impute(theirs, model, key_added="", progress=False),
        check=lambda: same(theirs, kept),
    )
    source = work / "c2.h5ad"
    before = source.read_bytes()
    cli_probe(
        "impute in.h5ad --out in.h5ad --key ''",
        "exit 0, its own input destroyed",
        ["impute", str(source), "--model", str(work / "model"), "--out", str(source), "--key", ""],
        check=lambda done: source.read_bytes() == before,
    )
    slide = next((DATA / "her2st" / "ST-imgs" / "C" / "C2").glob("*.jpg"))
    cli_probe(
        "predict slide.jpg --out res.png",
        "exit 0, the maps PNG written over the h5ad",
        ["predict", str(slide), "--model", str(work / "model"), "--out", str(work / "res.png")],
        check=lambda done: not (work / "res.png").exists(),
    )

    two = ad.concat(
        [c2, c2], label="library_id", keys=["C2", "C2b"], index_unique="-", uns_merge="first"
    )
    two.uns["spatial"] = {"C2": c2.uns["spatial"]["C2"], "C2b": c2.uns["spatial"]["C2"]}
    del two.obs["library_id"]
    probe(
        "two sections without a library_id column: pp.patches(library_id='C2')",
        "cut C3's spots from C2's image, no error",
        lambda: stmix.pp.patches(two, library_id="C2", size=32, progress=False),
    )
    subset = c2[: c2.n_obs // 2].copy()
    probe(
        "tl.fit(augment='snr') on a subset made after pp.neighbors",
        "trained with weight rows that do not sum to 1",
        lambda: stmix.tl.fit(subset, augment="snr", **TINY),
    )
    from safetensors.torch import load_file, save_file

    nan_model = work / "nan_model"
    shutil.copytree(work / "model", nan_model)
    state = load_file(str(nan_model / "model.safetensors"))
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = torch.full_like(state[first], float("nan"))
    save_file(state, str(nan_model / "model.safetensors"))
    probe(
        "NaN weights in model.safetensors",
        "100% NaN predictions, no error",
        lambda: stmix.tl.load(nan_model),
    )
    centred = c2.copy()
    centred.X = centred.X - centred.X.mean(axis=0)
    probe(
        "centred expression imputed with clip=True",
        "43% of the truth negative, no prediction negative, no warning",
        lambda: _warns(lambda: stmix.tl.impute(centred, model, progress=False), "negative"),
        expect_error=False,
    )

    text = work / "notes.ckpt"
    text.write_text("epoch 3 was the best\n")
    probe(
        "tl.fit(ckpt_path=<a text file>)",
        "torch's advice to set weights_only=False",
        lambda: stmix.tl.fit(c2, ckpt_path=text, **TINY),
    )
    if not torch.cuda.is_available():
        cli_probe(
            "fit --accelerator gpu on a machine without one",
            "unexpected error (MisconfigurationException) ... report it",
            ["fit", str(source), "--model", str(work / "m_gpu"), "--accelerator", "gpu"],
            check=lambda done: "--accelerator cpu" in done.stderr,
        )
    cli_probe(
        "fit, the disk full while the model is saved (ulimit -f 200)",
        "unexpected error (SafetensorError)",
        [
            "fit",
            str(source),
            "--model",
            str(work / "m_full"),
            "--backbone",
            "test_efficientnet",
            "--no-pretrained",
            "--epochs",
            "1",
            "--quiet",
        ],
        limit_kb=200,
        check=lambda done: not (work / "m_full").exists() and "File too large" in done.stderr,
    )
    for key, value, before_text in [
        ("backbone_kwargs", ["drop_rate", 0.1], "AttributeError"),
        ("spot_scale", "1.5", "TypeError"),
    ]:
        edited = work / f"model_{key}"
        shutil.copytree(work / "model", edited)
        record = json.loads((edited / "config.json").read_text())
        record["config"][key] = value
        (edited / "config.json").write_text(json.dumps(record))
        probe(f"config.json with {key}={value!r}", before_text, lambda e=edited: stmix.tl.load(e))

    blank = np.full((600, 800, 3), 245, dtype=np.uint8)
    probe(
        "pp.tile on a blank slide",
        "a grid over glass",
        lambda: stmix.pp.tile(blank, spot_diameter=20),
    )
    wide = np.full((200, 1000, 3), 200, dtype=np.uint8)
    probe(
        "pp.tile with a transposed tissue mask",
        "stretched silently over the image",
        lambda: stmix.pp.tile(wide, spot_diameter=10, tissue=np.ones((100, 20), dtype=bool)),
    )
    moved = c2.copy()
    moved.uns["spatial"]["C2"]["metadata"]["source_image_path"] = "/nowhere/C2.jpg"
    probe(
        "pp.tile when the source image moved",
        "the low-resolution image, silently",
        lambda: _warns(lambda: stmix.pp.tile(moved, tissue="all", spacing=400), "is not there"),
        expect_error=False,
    )


def _warns(call, words: str) -> str:
    """The warning (or logged warning) of ``call`` that holds ``words``; else an AssertionError."""
    import logging

    logged: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("stmix").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
    finally:
        logging.getLogger("stmix").removeHandler(handler)
    for message in [*map(str, (w.message for w in caught)), *logged]:
        if words in message:
            return "warns: " + message.splitlines()[0][:140]
    raise AssertionError(f"no warning about {words!r}")


def _embed() -> dict:
    return {"backbone": "test_efficientnet", "pretrained": False, "progress": False}


if __name__ == "__main__":
    main()
