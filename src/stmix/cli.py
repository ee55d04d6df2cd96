"""The ``stmix`` command: train, predict and score on .h5ad files."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from stmix import _options
from stmix.errors import StmixError

logger = logging.getLogger("stmix")

EPILOG = """\
examples:
  stmix her2st C2 --out results/C2.h5ad          the whole pipeline on a HER2ST section
  stmix fit sample.h5ad --model sample_model/ --layer log1p --genes genes.txt
  stmix impute other.h5ad --model sample_model/ --out other_imputed.h5ad
  stmix evaluate other_imputed.h5ad --split test
  stmix predict slide.jpg --model sample_model/ --out slide.h5ad   a slide nobody measured
  stmix benchmark sample.h5ad --methods none snr --seeds 0 1 2

input .h5ad files follow scanpy's Visium layout: spot centres in obsm['spatial'] (full-resolution
pixels) and the H&E image in uns['spatial'] (or its path in metadata['source_image_path']).
expression should be log-normalised (scanpy.pp.normalize_total + scanpy.pp.log1p).
"""


def _read(path: str):
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give an .h5ad file.")
    if path.suffix.lower() != ".h5ad":
        raise ValueError(
            f"{path} is not an .h5ad file: stmix reads AnnData files (for Visium data, "
            f"scanpy.read_visium(folder).write_h5ad('section.h5ad') makes one)."
        )
    try:
        return ad.read_h5ad(path)
    except Exception as error:  # h5py, anndata and OS errors alike
        raise ValueError(
            f"{path} cannot be read as AnnData ({type(error).__name__}: {error}); a file written "
            f"by a newer anndata needs that version (installed: {ad.__version__})."
        ) from None


def _check_out(path: str | None, flag: str = "--out") -> None:
    """An output file name, checked before any work is done."""
    if path is not None and Path(path).is_dir():
        raise ValueError(
            f"{flag} {path} is a folder; give a file name such as {Path(path) / 'out.h5ad'}."
        )
    if path is not None:
        _check_writable(Path(path), flag)


def _check_writable(path: Path, flag: str) -> None:
    """The nearest folder of ``path`` that exists can be written into."""
    import os

    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {path}: {folder} cannot be written to.")


def _check_apart(files: dict[str, str | None], folders: dict[str, str | None]) -> None:
    """Outputs that would overwrite each other, or land in a model folder, before any work."""
    seen: dict[Path, str] = {}
    for flag, path in files.items():
        if path is None:
            continue
        where = Path(path).resolve()
        if where in seen:
            raise ValueError(
                f"{flag} and {seen[where]} name the same file {path}: one would overwrite the "
                f"other; give them different names."
            )
        seen[where] = flag
    for flag, folder in folders.items():
        if folder is None:
            continue
        _check_writable(Path(folder) / "config.json", flag)
        for where, other in seen.items():
            if Path(folder).resolve() in where.parents or where == Path(folder).resolve():
                raise ValueError(
                    f"{other} {where} lies in the model folder {flag} {folder}, which holds only "
                    f"the model's files; write it elsewhere."
                )


def _write(adata, path: str, compression: str | None = None) -> None:
    from stmix._io import write_h5ad

    write_h5ad(adata, path, compression)


def _genes(args: argparse.Namespace, adata) -> list[str] | str | None:
    if args.genes is None:
        return None
    if Path(args.genes).is_file():
        return [g.strip() for g in Path(args.genes).read_text().split() if g.strip()]
    if args.genes in adata.var.columns:
        return args.genes
    names = [g.strip() for g in args.genes.split(",") if g.strip()]
    unknown = [g for g in names if g not in adata.var_names]
    if unknown:
        raise ValueError(
            f"--genes names genes that {args.input} does not measure: "
            f"{_suggest(unknown, adata.var_names)}."
        )
    return names


def _suggest(unknown: Sequence[str], known: Sequence[str]) -> str:
    """``unknown`` genes, each with the closest known name where a spelling is close."""
    import difflib

    upper = {str(g).upper(): str(g) for g in known}
    said = []
    for gene in unknown:
        close = upper.get(gene.upper()) or next(
            iter(difflib.get_close_matches(gene.upper(), list(upper), n=1, cutoff=0.75)), None
        )
        hint = upper.get(close, close) if close else None
        said.append(f"{gene} (did you mean {hint}?)" if hint else gene)
    return ", ".join(said)


def _size(args: argparse.Namespace) -> int:
    """The patch side: ``--size``, else the preset's."""
    from stmix import _presets

    return args.size if args.size is not None else _presets.resolve(args.preset).size


def _prepare(adata, args: argparse.Namespace) -> None:
    """Run the preparation steps that the input lacks, and say so."""
    import stmix

    size = _size(args)
    if "stmix_patches" not in adata.obsm or adata.obsm["stmix_patches"].shape[1] != size:
        print(f"cutting {size} px patches (stmix.pp.patches)")
        stmix.pp.patches(adata, size=size, progress=not args.quiet)
    if "stmix_split" not in adata.obs:
        print(f"splitting spots 30/20/50 with seed {args.seed} (stmix.pp.split)")
        stmix.pp.split(adata, seed=args.seed)
    if args.augment in ("snr", "knn") and "stmix_weights" not in adata.obsp:
        print("finding partner candidates (stmix.pp.neighbors)")
        stmix.pp.neighbors(adata, layer=args.layer)


def _fit_kwargs(args: argparse.Namespace) -> dict:
    plan_kwargs = {}
    if args.patience is not None:
        plan_kwargs["patience"] = args.patience or None  # 0: never stop early
    if args.target is not None:
        plan_kwargs["target"] = args.target
    return {
        "layer": args.layer,
        "augment": args.augment,
        "preset": args.preset,
        "backbone": args.backbone,
        "pretrained": not args.no_pretrained,
        "weights": args.weights,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "plan_kwargs": plan_kwargs,
        "scales": tuple(args.scales),
        "seed": args.seed,
        "accelerator": args.accelerator,
        "devices": args.devices,
        "progress": not args.quiet,
    }


def _fit(args: argparse.Namespace) -> int:
    import stmix
    from stmix._model_files import check_save_target

    _check_out(args.out)
    _check_apart({"--out": args.out}, {"--model": args.model})
    check_save_target(Path(args.model), args.overwrite)  # before hours of training
    adata = _read(args.input)
    genes = _genes(args, adata)  # before patches are cut
    stmix.tl.check_hardware(args.accelerator, args.devices)  # a GPU this machine lacks, before work
    _prepare(adata, args)
    model = stmix.tl.fit(adata, genes=genes, **_fit_kwargs(args))
    model.save(args.model, overwrite=args.overwrite)
    print(f"{model} saved to {args.model}")
    if args.out:
        _write(adata, args.out)
        print(f"wrote {args.out}")
    return 0


def _impute(args: argparse.Namespace) -> int:
    from stmix import _model_files

    _check_out(args.out)
    _model_files.genes(Path(args.model))  # the model folder, checked before torch is imported
    adata = _read(args.input)
    import stmix

    model = stmix.tl.load(args.model, device=args.device)
    patches = adata.obsm.get("stmix_patches")
    if patches is None or patches.shape[1] != model.patch_size:
        print(f"cutting {model.patch_size} px patches (stmix.pp.patches)")
        stmix.pp.patches(
            adata,
            size=model.patch_size,
            spot_scale=model.config.spot_scale,
            progress=not args.quiet,
        )
    if not adata.var_names.isin(model.genes).any():  # a section that was never measured
        pred = stmix.tl.predict(
            adata, model, key_added=args.key, device=args.device, progress=not args.quiet
        )
        _write(pred, args.out)
        print(
            f"{args.input} measures none of the model's genes: wrote the predictions of its "
            f"{pred.n_vars} genes for {pred.n_obs} spots as X of {args.out}"
        )
        return 0
    stmix.tl.impute(adata, model, key_added=args.key, device=args.device, progress=not args.quiet)
    _write(adata, args.out)
    written = int(adata.var[f"{args.key}_predicted"].sum())
    print(
        f"predicted {written} of the model's {len(model.genes)} genes for {adata.n_obs} spots "
        f"into layers[{args.key!r}] of {args.out}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import stmix

    _check_out(args.csv, "--csv")
    _check_apart({"input": args.input, "--csv": args.csv}, {})
    adata = _read(args.input)
    split = None if args.split == "all" else args.split
    if split is not None and "stmix_split" not in adata.obs:
        raise ValueError(
            f"{args.input} has no split (obs['stmix_split']): score every spot with --split all, "
            f"or evaluate the file stmix fit --out wrote (fit splits the spots)."
        )
    table = stmix.tl.evaluate(adata, key=args.key, layer=args.layer, split=split)
    metrics = adata.uns["stmix_metrics"]
    print(
        f"{metrics['n_genes']} genes on {metrics['n_spots']} {args.split} spots: "
        f"MSE {metrics['mse']:.4f}  MAE {metrics['mae']:.4f}  PCC {metrics['pcc']:.4f}"
    )
    for name, scores in (metrics.get("by_library") or {}).items():
        print(
            f"  section {name}: {scores['n_spots']} spots, mean PCC {scores['pcc']:.4f} "
            f"(50 highest-expressed genes {scores['pcc_heg']:.4f}), MSE {scores['mse']:.4f}, "
            f"{scores['n_skipped']} constant genes skipped"
        )
    if split is not None and split != "train":
        genes = list(dict.fromkeys(table.index))
        mean = stmix.tl.training_mean(adata, layer=metrics_layer(metrics), genes=genes, split=split)
        print(f"training mean everywhere, for scale: MSE {mean['mse']:.4f}  MAE {mean['mae']:.4f}")
    print("best predicted genes (PCC):")
    overall = table
    if metrics.get("library_key") in table.columns:  # a row per gene and section: rank overall
        overall = adata.var[["stmix_mse", "stmix_mae", "stmix_pcc"]].dropna()
        overall.columns = ["mse", "mae", "pcc"]
    print(overall.sort_values("pcc", ascending=False).head(args.top).to_string(float_format="%.4f"))
    if args.csv:
        from stmix._io import atomic_file

        with atomic_file(args.csv) as temporary:
            table.to_csv(temporary)
        print(f"wrote {args.csv}")
    return 0


def metrics_layer(metrics: dict) -> str | None:
    """The measured layer that ``tl.evaluate`` scored against, as a ``layer`` argument."""
    return None if metrics.get("layer") in (None, "X") else metrics["layer"]


def _predict(args: argparse.Namespace) -> int:
    from stmix import _image, _model_files

    if len(args.slide) > 1:
        return _predict_cohort(args)
    slide = args.slide[0]
    _check_out(args.out)
    png = Path(args.png) if args.png else Path(args.out).with_suffix(".png")
    _check_out(str(png), "--png")
    _check_apart({"--out": args.out, "--png": str(png), "slide": slide}, {})
    _image.image_size(Path(slide))  # the slide is readable, before torch is imported
    drawn = _drawn_genes(args.genes, _model_files.genes(Path(args.model)))  # before torch
    import stmix
    from stmix.tl import _slides

    model = stmix.tl.load(args.model, device=args.device)
    pred = _slides.predict_slide(
        slide,
        model,
        _geometry(args, model, slide),
        interval=_interval(args, model),
        device=args.device,
        progress=not args.quiet,
    )
    print(f"{pred.n_obs} pseudo-spots on the tissue of {slide}")
    _write(pred, args.out, compression="gzip")
    genes = _draw(pred, drawn, png)
    print(
        f"predicted {pred.n_vars} genes at {pred.n_obs} pseudo-spots into X of {args.out} "
        f"(sc.pl.spatial(sc.read_h5ad(...), color=gene) draws one); maps of "
        f"{', '.join(genes)} in {png}"
    )
    return 0


def _geometry(args: argparse.Namespace, model, slide: str):
    from stmix.tl import _slides

    return _slides.geometry(model, slide, **_tile_options(args))


def _tile_options(args: argparse.Namespace) -> dict:
    """The pseudo-spots the command line asks for, as ``pp.tile`` names them."""
    names = ("spot_diameter", "spacing", "mpp", "grid", "tissue")
    return {name: getattr(args, name) for name in names}


def _interval(args: argparse.Namespace, model) -> float | None:
    """``--interval``; by default 0.9 for a model that can give intervals, else none."""
    if args.interval is None:
        return 0.9 if model.calibration is not None else None
    return args.interval or None  # 0: predictions only


def _draw(pred, drawn: list[str] | None, png: Path) -> list[str]:
    """Maps of the genes asked for (else the three most variable) into ``png``.

    With the flag of unfamiliar tissue in the predictions, its map and the spread are drawn too.
    """
    import stmix

    genes = drawn or list(pred.to_df().var().sort_values(ascending=False).index[:3])
    stmix.pl.maps(pred, genes, trust="stmix_ood" in pred.obs, show=False, save=png)
    return genes


def _predict_cohort(args: argparse.Namespace) -> int:
    """Several slides: ``--out`` is a folder of one .h5ad and one .png per slide."""
    from stmix import _image, _model_files

    if args.png:
        raise ValueError(
            "--png names one file: with several slides each map goes beside its .h5ad."
        )
    out = Path(args.out)
    if out.suffix == ".h5ad" or out.is_file():
        raise ValueError(
            f"--out {args.out} names a file: with several slides it is the folder that receives "
            f"one .h5ad per slide."
        )
    for slide in args.slide:
        _image.image_size(Path(slide))  # every slide readable, before torch is imported
    drawn = _drawn_genes(args.genes, _model_files.genes(Path(args.model)))
    import anndata as ad

    import stmix

    model = stmix.tl.load(args.model, device="cpu")
    done = stmix.tl.predict_slides(
        args.slide,
        model,
        out,
        **_tile_options(args),
        interval=_interval(args, model),
        accelerator=args.accelerator,
        devices=args.devices,
        progress=not args.quiet,
    )
    for row in done.itertuples():
        png = Path(row.output).with_suffix(".png")
        if row.status == "predicted" or not png.exists():
            _draw(ad.read_h5ad(row.output), drawn, png)
    counts = done["status"].value_counts()
    print(
        f"{counts.get('predicted', 0)} slides predicted, {counts.get('skipped', 0)} already done "
        f"(their .h5ad kept), into {out}"
    )
    return 0


def _drawn_genes(option: str | None, genes: Sequence[str]) -> list[str] | None:
    """The genes ``--genes`` names, checked against the model's before any work."""
    if not option:
        return None
    names = [g.strip() for g in option.split(",") if g.strip()]
    unknown = [g for g in names if g not in genes]
    if unknown:
        raise ValueError(
            f"--genes names genes the model does not predict: {_suggest(unknown, genes)}; it "
            f"predicts {len(genes)} genes, e.g. {', '.join(list(genes)[:5])}."
        )
    return names


def _benchmark(args: argparse.Namespace) -> int:
    import stmix

    _check_out(args.csv, "--csv")
    _check_apart({"input": args.input, "--csv": args.csv}, {})
    adata = _read(args.input)
    size = _size(args)
    patches = adata.obsm.get("stmix_patches")
    if patches is None or patches.shape[1] != size:
        print(f"cutting {size} px patches (stmix.pp.patches)")
        stmix.pp.patches(adata, size=size, progress=not args.quiet)
    kwargs = _fit_kwargs(args)
    for key in ("augment", "seed", "progress", "layer"):
        kwargs.pop(key)
    table = stmix.tl.compare(
        adata,
        args.methods,
        seeds=args.seeds,
        layer=args.layer,
        genes=_genes(args, adata),
        progress=not args.quiet,
        **kwargs,
    )
    summary = table.groupby("method", sort=False)[["mse", "mae", "pcc"]].agg(["mean", "std"])
    print(f"test metrics over seeds {args.seeds} (mean, sd):")
    print(summary.to_string(float_format="%.4f"))
    if args.csv:
        from stmix._io import atomic_file

        with atomic_file(args.csv) as temporary:
            table.to_csv(temporary, index=False)
        print(f"wrote {args.csv}")
    return 0


def _her2st(args: argparse.Namespace) -> int:
    import scanpy as sc

    import stmix

    adata = stmix.datasets.her2st(args.section, root=args.root)
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    stmix.pp.select_genes(adata, args.n_genes, method=args.gene_method)
    args.layer = None
    _prepare(adata, args)
    counts = adata.obs["stmix_split"].value_counts()
    print(
        f"HER2ST {args.section}: {adata.n_obs} spots (train {counts['train']}, val "
        f"{counts['val']}, test {counts['test']}), {args.n_genes} genes by {args.gene_method}"
    )

    model = stmix.tl.fit(adata, genes="stmix_selected", **_fit_kwargs(args))
    record = adata.uns["stmix"]
    print(
        f"fit {args.augment}: {model.config.backbone} ({model.config.weights_source}), "
        f"{model.patch_size} px, best epoch {record['best_epoch']} of "
        f"{record['timing']['epochs_run']}, {record['timing']['seconds_per_epoch']:.1f} s/epoch "
        f"on {record['timing']['device']}"
    )
    stmix.tl.impute(adata, model, progress=not args.quiet)
    stmix.tl.evaluate(adata)
    metrics = adata.uns["stmix_metrics"]
    mean = stmix.tl.training_mean(adata, genes="stmix_selected")
    print(f"test ({metrics['n_spots']} spots, {metrics['n_genes']} genes)   MSE      MAE      PCC")
    print(
        f"  stmix ({args.augment})                 {metrics['mse']:.4f}   {metrics['mae']:.4f}   "
        f"{metrics['pcc']:.4f}"
    )
    print(f"  training mean everywhere     {mean['mse']:.4f}   {mean['mae']:.4f}   n/a")
    _write(adata, args.out)
    model_dir = Path(args.out).with_suffix("")
    model.save(model_dir.parent / f"{model_dir.name}_model", overwrite=True)
    print(
        f"wrote {args.out} (layers['stmix'], var['stmix_pcc'], uns['stmix']) and the model "
        f"to {model_dir.parent / f'{model_dir.name}_model'}"
    )
    return 0


def _training_options(parser: argparse.ArgumentParser) -> None:
    from stmix._presets import DEFAULT_PRESET, PRESETS, TARGETS
    from stmix.nn.constants import METHODS

    def described(name: str) -> str:
        c = PRESETS[name]
        stop = f"patience {c.patience}" if c.patience else "no early stopping"
        return (
            f"{name}: {c.backbone} at {c.size} px, lr {c.lr:g}, {c.target} target, "
            f"at most {c.epochs} epochs, {stop}"
        )

    group = parser.add_argument_group(
        "training",
        "every setting starts from the preset; the options below change single settings",
    )
    group.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        choices=list(PRESETS),
        help="; ".join(described(name) for name in PRESETS) + f" (default {DEFAULT_PRESET})",
    )
    group.add_argument(
        "--augment",
        default="snr",
        choices=METHODS,
        help="how training samples are made; snr is SNR-ST-Mix (default snr)",
    )
    group.add_argument("--backbone", default=None, help="any timm model name (the preset's)")
    group.add_argument(
        "--weights",
        default=None,
        help="local weights file for the backbone (for machines without internet)",
    )
    group.add_argument(
        "--no-pretrained", action="store_true", help="start from random weights instead of ImageNet"
    )
    group.add_argument("--epochs", type=int, default=None, help="maximum epochs (the preset's)")
    group.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop after this many epochs without better validation MSE; 0 never stops early "
        "(the preset's)",
    )
    group.add_argument("--batch-size", type=int, default=None, help="spots per step (the preset's)")
    group.add_argument("--lr", type=float, default=None, help="learning rate (the preset's)")
    group.add_argument(
        "--target",
        default=None,
        choices=TARGETS,
        help="learn the expression, or its deviation from the mean (the preset's)",
    )
    group.add_argument(
        "--size",
        type=int,
        default=None,
        help="patch side in pixels, when patches must be cut (the preset's)",
    )
    group.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=[1.0],
        help="fields of view the network reads, in spot patches: '1 3' adds a field three "
        "times wider around each spot (1)",
    )
    group.add_argument("--seed", type=int, default=0, help="seed of split and training (0)")
    group.add_argument(
        "--accelerator", default="auto", help="auto, cpu, gpu, mps (auto: a GPU when there is one)"
    )
    group.add_argument("--devices", type=int, default=1, help="GPUs or processes to train on (1)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``stmix`` command."""
    parser = argparse.ArgumentParser(
        prog="stmix",
        description="Predict spatial gene expression from H&E images with SNR-ST-Mix. Each "
        "command reads and writes .h5ad files that scanpy and squidpy open.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--debug", action="store_true", help="show Python tracebacks instead of one-line errors"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser._commands = commands.choices  # the subcommands' parsers, for errors in their words
    _add_her2st(commands)
    _add_fit(commands)
    _add_impute(commands)
    _add_predict(commands)
    _add_benchmark(commands)
    _add_evaluate(commands)
    return parser


def _add_her2st(commands) -> None:
    """The ``stmix her2st`` command."""
    her2st = commands.add_parser(
        "her2st",
        help="run the whole pipeline on one HER2ST breast cancer section",
        description="Load a HER2ST section ($STMIX_DATA_DIR/her2st, --root, or a download), "
        "log-normalise, choose genes, cut patches, split 30/20/50, train, predict every spot, "
        "print the test metrics and write the imputed AnnData and the model.",
    )
    her2st.add_argument("section", nargs="?", default="C2", help="section, A1 to H3 (C2)")
    her2st.add_argument("--root", default=None, help="folder laid out as the upstream data/")
    her2st.add_argument("--out", default="stmix_output/her2st.h5ad", help="output .h5ad")
    her2st.add_argument("--n-genes", type=int, default=250, help="genes to predict (250)")
    her2st.add_argument(
        "--gene-method",
        default="mean",
        choices=("mean", "moran", "hvg"),
        help="how genes are chosen (mean: the paper's top by mean)",
    )
    _training_options(her2st)
    her2st.set_defaults(run=_her2st)


def _add_fit(commands) -> None:
    """The ``stmix fit`` command."""
    fit = commands.add_parser(
        "fit",
        help="train a model on the training spots of an .h5ad file",
        description="Train an image-to-expression model. Missing patches, split and partner "
        "candidates are computed first (stmix.pp.patches / split / neighbors).",
    )
    fit.add_argument("input", help="input .h5ad")
    fit.add_argument("--model", required=True, help="folder to save the model in")
    fit.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a model saved there before (other files are never replaced)",
    )
    fit.add_argument("--out", default=None, help="also write the AnnData with the fit record")
    fit.add_argument("--layer", default=None, help="layer of log-normalised expression (X)")
    fit.add_argument(
        "--genes",
        default=None,
        help="genes to predict: a file with one per line, "
        "a boolean var column, or comma-separated names (all genes)",
    )
    _training_options(fit)
    fit.set_defaults(run=_fit)


def _add_impute(commands) -> None:
    """The ``stmix impute`` command."""
    impute = commands.add_parser("impute", help="predict every spot with a saved model")
    impute.add_argument("input", help="input .h5ad")
    impute.add_argument("--model", required=True, help="folder of a saved model")
    impute.add_argument("--out", required=True, help="output .h5ad")
    impute.add_argument(
        "--key", default="stmix", help="layer to write the predictions into (stmix)"
    )
    impute.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (auto)")
    impute.add_argument("--quiet", action="store_true", help="no progress bars")
    impute.set_defaults(run=_impute)


def _add_predict(commands) -> None:
    """The ``stmix predict`` command."""
    predict = commands.add_parser(
        "predict",
        help="predict expression over an H&E slide that was never measured",
        description="Lay pseudo-spots on a grid over the slide's tissue (stmix.pp.tile), cut "
        "their patches as the model's training patches were cut, predict every gene of the "
        "model and write an .h5ad of the model's genes (X: the predictions) and a PNG of a few "
        "genes' maps.",
    )
    predict.add_argument(
        "slide",
        nargs="+",
        help="H&E image files: JPEG, PNG, or whole-slide images (SVS, NDPI, TIFF)",
    )
    predict.add_argument("--model", required=True, help="folder of a saved model")
    predict.add_argument(
        "--out",
        required=True,
        help="output .h5ad; with several slides, a folder of one .h5ad and .png per slide "
        "(slides already there are skipped, so an interrupted run continues)",
    )
    predict.add_argument(
        "--spacing",
        type=float,
        default=None,
        help="distance between pseudo-spots, in µm when the pixel size is known (--mpp, or a "
        "slide's own), else pixels (default: the diameter, spots touching)",
    )
    predict.add_argument(
        "--spot-diameter",
        type=float,
        default=None,
        help="pseudo-spot diameter, in µm when the pixel size is known (--mpp, or a slide's "
        "own), else pixels (default: the model's training spots)",
    )
    predict.add_argument(
        "--mpp",
        type=float,
        default=None,
        help="micrometres per pixel of the slide; sizes are then in µm (default: what a "
        "whole-slide image records; without it the slide is taken as scanned like the training "
        "slides, sizes in pixels)",
    )
    predict.add_argument("--grid", default="hexagonal", choices=("hexagonal", "square"))
    predict.add_argument(
        "--interval",
        type=float,
        default=None,
        help="coverage level of the bounds written beside the predictions, with their spread "
        "and the flag of tissue unlike the training data (0.9 when the model can give them; "
        "0: predictions only)",
    )
    predict.add_argument(
        "--tissue",
        default="auto",
        choices=("auto", "all"),
        help="where to lay pseudo-spots: auto (the textured, stained tissue) or all (the whole "
        "image) (auto)",
    )
    predict.add_argument(
        "--genes", default=None, help="genes to draw, comma-separated (the 3 most variable)"
    )
    predict.add_argument("--png", default=None, help="where to draw the maps (OUT with .png)")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (auto)")
    predict.add_argument(
        "--accelerator", default="auto", help="several slides: Lightning's accelerator (auto)"
    )
    predict.add_argument(
        "--devices",
        type=int,
        default=1,
        help="several slides: processes that share them, one per GPU (or CPU process) (1)",
    )
    predict.add_argument("--quiet", action="store_true", help="no progress bars")
    predict.set_defaults(run=_predict)


def _add_benchmark(commands) -> None:
    """The ``stmix benchmark`` command."""
    benchmark = commands.add_parser(
        "benchmark",
        help="compare augmentations on an .h5ad file (same splits, same budget)",
        description="Train every method on the same splits (one per seed) with the same "
        "budget and print its test metrics; 'mean' predicts the training mean everywhere.",
    )
    benchmark.add_argument("input", help="input .h5ad (log-normalised)")
    benchmark.add_argument(
        "--methods",
        nargs="+",
        default=["mean", "none", "basic", "mixup", "cutmix", "cmixup", "knn", "snr"],
        help="methods to compare (all)",
    )
    benchmark.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0, 1, 2],
        help="one split and training seed each (0 1 2)",
    )
    benchmark.add_argument("--layer", default=None, help="layer of log-normalised expression (X)")
    benchmark.add_argument("--genes", default=None, help="genes to predict, as for fit")
    benchmark.add_argument("--csv", default=None, help="write one row per method and seed")
    _training_options(benchmark)
    benchmark.set_defaults(run=_benchmark)


def _add_evaluate(commands) -> None:
    """The ``stmix evaluate`` command."""
    evaluate = commands.add_parser("evaluate", help="score predictions against measurements")
    evaluate.add_argument("input", help=".h5ad with predictions (stmix impute)")
    evaluate.add_argument("--key", default="stmix", help="layer of the predictions (stmix)")
    evaluate.add_argument(
        "--layer",
        "--truth-layer",
        dest="layer",
        default=None,
        help="layer of the measurements (X); --truth-layer is its old name",
    )
    evaluate.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test", "all"),
        help="spots to score (test)",
    )
    evaluate.add_argument("--top", type=int, default=10, help="genes to list (10)")
    evaluate.add_argument("--csv", default=None, help="write the per-gene table here")
    evaluate.set_defaults(run=_evaluate)


#: Errors that are a user's mistake or the machine's state: one line, exit status 2. stmix
#: raises its own (:mod:`stmix.errors`) and ValueErrors with what to do; OSError and
#: MemoryError come from the machine. Anything else is a bug: the --debug hint, exit status 1.
EXPECTED = (ValueError, StmixError, OSError, FloatingPointError, MemoryError)


def _expected(error: BaseException) -> bool:
    """Whether ``error`` is a user's mistake or the machine's state (a GPU out of memory too)."""
    return isinstance(error, EXPECTED) or type(error).__name__ == "OutOfMemoryError"


#: API parameters that a command's option feeds under another name.
ALIASES = {"key_added": "key", "n": "n_genes"}


def _flags(parser: argparse.ArgumentParser | None) -> dict[str, str]:
    """The command's options by the API parameter each feeds, for :func:`stmix._options.spelled`."""
    if parser is None:
        return {}
    flags = {}
    for action in parser._actions:  # the subcommand's own options
        long = [f for f in action.option_strings if f.startswith("--")]
        if long:
            flags[action.dest] = long[0]
    flags.update({api: flags[dest] for api, dest in ALIASES.items() if dest in flags})
    return flags


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stmix`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    command = getattr(parser, "_commands", {}).get(args.command)
    from stmix._terminate import EXIT_STATUS, Terminated, sigterm_raises

    try:
        with sigterm_raises(), _options.spelled(_flags(command)):
            return args.run(args)
    except KeyboardInterrupt as error:
        how = "terminated (SIGTERM)" if isinstance(error, Terminated) else "interrupted"
        print(f"stmix {args.command}: {how}; nothing was written.", file=sys.stderr)
        return EXIT_STATUS if isinstance(error, Terminated) else 130
    except Exception as error:
        if args.debug:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        if _expected(error):
            print(f"stmix {args.command}: error: {message}", file=sys.stderr)
            return 2
        print(
            f"stmix {args.command}: unexpected error ({type(error).__name__}): {message}\n"
            f"Run it again with --debug to see where it happened, and report it.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
