from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from PIL import Image

import stmix
import stmix.errors
from stmix.cli import main
from tests.support import TINY as TINY_FIT

TINY = [
    "--backbone",
    "test_efficientnet",
    "--no-pretrained",
    "--epochs",
    "2",
    "--size",
    "32",
    "--quiet",
]


def test_help_a_biologist_can_follow(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for word in ("her2st", "fit", "impute", "evaluate", "examples:", "obsm['spatial']"):
        assert word in out
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "--augment" in out and "SNR-ST-Mix" in out and "--weights" in out
    # the defaults are the presets', written out once, from the presets themselves
    assert "--preset {cpu,paper}" in out and "tf_efficientnet_lite0 at 112 px, lr 0.001" in out
    assert "vit_large_patch16_224 at 224 px, lr 3e-05" in out


def test_the_cli_trains_with_the_preset_and_its_changes(her2st, tmp_path):
    adata = her2st("C4")[:, :30].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.write_h5ad(tmp_path / "c4.h5ad")
    args = ["fit", str(tmp_path / "c4.h5ad"), "--model", str(tmp_path / "m"), "--quiet"]
    args += ["--backbone", "test_efficientnet", "--no-pretrained", "--size", "32"]
    assert main([*args, "--epochs", "2", "--patience", "0", "--lr", "0.01"]) == 0
    params = stmix.tl.load(tmp_path / "m").config["params"]
    assert params["preset"] == "cpu" and params["epochs"] == 2 and params["lr"] == 0.01
    assert params["patience"] is None  # --patience 0: never stop early
    assert params["target"] == "delta" and params["batch_size"] == 8  # the preset's
    args[3] = str(tmp_path / "m2")
    assert main([*args, "--epochs", "1", "--target", "expression", "--preset", "paper"]) == 0
    params = stmix.tl.load(tmp_path / "m2").config["params"]
    assert params["preset"] == "paper" and params["target"] == "expression"
    assert params["lr"] == 3e-5 and params["backbone"] == "test_efficientnet"


def test_her2st_main_job(data_dir, tmp_path, capsys):
    out = tmp_path / "C3.h5ad"
    code = main(
        [
            "her2st",
            "C3",
            "--root",
            str(data_dir / "her2st"),
            "--out",
            str(out),
            "--n-genes",
            "20",
            *TINY,
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "HER2ST C3: 180 spots (train 54, val 36, test 90), 20 genes" in printed
    assert "stmix (snr)" in printed and "training mean everywhere" in printed
    assert "fit snr: test_efficientnet (" in printed  # the backbone trained, by name
    adata = ad.read_h5ad(out)
    assert adata.var["stmix_selected"].sum() == 20
    predicted = stmix.tl.predictions(adata).to_df()
    assert list(predicted.columns) == list(adata.var_names[adata.var["stmix_selected"].to_numpy()])
    assert adata.var["stmix_predicted"].equals(adata.var["stmix_selected"])
    assert np.isfinite(predicted.to_numpy()).all()
    assert adata.uns["stmix_metrics"]["n_genes"] == 20
    model = stmix.tl.load(tmp_path / "C3_model")
    assert len(model.genes) == 20


def test_fit_impute_evaluate_on_files(her2st, tmp_path, capsys):
    adata = her2st("C5")
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.write_h5ad(tmp_path / "c5.h5ad")
    genes = list(adata.var_names[np.argsort(np.asarray(adata.X.mean(axis=0)).ravel())[-8:]])
    (tmp_path / "genes.txt").write_text("\n".join(genes))

    assert (
        main(
            [
                "fit",
                str(tmp_path / "c5.h5ad"),
                "--model",
                str(tmp_path / "m"),
                "--genes",
                str(tmp_path / "genes.txt"),
                "--out",
                str(tmp_path / "fit.h5ad"),
                *TINY,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "stmix.pp.patches" in printed and "stmix.pp.neighbors" in printed
    assert (
        main(
            [
                "impute",
                str(tmp_path / "fit.h5ad"),
                "--model",
                str(tmp_path / "m"),
                "--out",
                str(tmp_path / "imputed.h5ad"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(["evaluate", str(tmp_path / "imputed.h5ad"), "--csv", str(tmp_path / "genes.csv")])
        == 0
    )
    printed = capsys.readouterr().out
    assert "8 genes on" in printed and "PCC" in printed
    assert "training mean everywhere, for scale: MSE" in printed
    assert (tmp_path / "genes.csv").read_text().count("\n") == 9
    # impute cuts the patches itself on a file that has none
    assert (
        main(
            [
                "impute",
                str(tmp_path / "c5.h5ad"),
                "--model",
                str(tmp_path / "m"),
                "--out",
                str(tmp_path / "raw_imputed.h5ad"),
                "--quiet",
            ]
        )
        == 0
    )
    assert "cutting 32 px patches" in capsys.readouterr().out


def test_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing.h5ad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stmix evaluate: error:") and "does not exist" in err
    assert main(["her2st", "Z9", "--quiet"]) == 2
    assert "Unknown HER2ST section" in capsys.readouterr().err


def test_benchmark_compares_methods_on_a_file(her2st, tmp_path, capsys):
    adata = her2st("C6")
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    stmix.pp.select_genes(adata, 10, method="mean")
    adata = adata[:, adata.var["stmix_selected"].to_numpy()].copy()
    adata.write_h5ad(tmp_path / "c6.h5ad")
    assert (
        main(
            [
                "benchmark",
                str(tmp_path / "c6.h5ad"),
                "--methods",
                "mean",
                "none",
                "snr",
                "--seeds",
                "0",
                "1",
                "--csv",
                str(tmp_path / "b.csv"),
                *TINY,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "test metrics over seeds [0, 1]" in printed
    table = __import__("pandas").read_csv(tmp_path / "b.csv")
    assert list(table["method"]) == ["mean", "none", "snr"] * 2
    assert table["mse"].notna().all()


def test_several_sections_and_an_unmeasured_one(tmp_path, capsys):
    sections = {
        name: stmix.datasets.synthetic(100, seed=seed, library_id=name)
        for seed, name in enumerate(("A", "B"))
    }
    stmix.pp.concat(sections).write_h5ad(tmp_path / "two.h5ad")
    new = stmix.datasets.synthetic(64, seed=7, library_id="C")
    unmeasured = ad.AnnData(obs=new.obs[[]].copy())
    unmeasured.obsm["spatial"] = new.obsm["spatial"]
    unmeasured.uns["spatial"] = new.uns["spatial"]
    unmeasured.write_h5ad(tmp_path / "unmeasured.h5ad")

    args = ["--backbone", "test_efficientnet", "--no-pretrained", "--size", "16", "--quiet"]
    fitted = str(tmp_path / "fitted.h5ad")
    model = str(tmp_path / "m")
    assert main(["fit", str(tmp_path / "two.h5ad"), "--model", model, "--out", fitted, *args]) == 0
    out = capsys.readouterr().out
    assert "cutting 16 px patches" in out and "stmix.pp.neighbors" in out
    config = stmix.tl.load(model).config["params"]
    assert config["library_key"] == "library_id" and config["sections"] == ["A", "B"]
    assert main(["impute", fitted, "--model", model, "--out", fitted, "--quiet"]) == 0
    assert main(["evaluate", fitted]) == 0
    out = capsys.readouterr().out
    assert "section A:" in out and "section B:" in out and "50 highest-expressed genes" in out

    predicted = str(tmp_path / "predicted.h5ad")
    assert (
        main(
            [
                "impute",
                str(tmp_path / "unmeasured.h5ad"),
                "--model",
                model,
                "--out",
                predicted,
                "--quiet",
            ]
        )
        == 0
    )
    assert "measures none of the model's genes" in capsys.readouterr().out
    back = ad.read_h5ad(predicted)
    assert list(back.var_names) == [f"gene_{g}" for g in range(8)] and back.shape == (64, 8)
    assert "stmix_patches" not in back.obsm and "spatial" in back.obsm


def test_predict_a_slide_with_three_arguments(prepared, data_dir, tmp_path, capsys):
    model = stmix.tl.fit(prepared, augment="none", **{**TINY_FIT, "epochs": 1})
    config = model.config
    scalefactors = prepared.uns["spatial"]["C2"]["scalefactors"]
    assert config["spot_diameter_px"] == pytest.approx(scalefactors["spot_diameter_fullres"])
    mpp = prepared.uns["spatial"]["C2"]["metadata"]["microns_per_pixel"]
    assert config["microns_per_pixel"] == pytest.approx(mpp)
    assert config["spot_diameter_um"] == pytest.approx(100, rel=0.01)  # the ST array's 100 µm
    model.save(tmp_path / "m")
    slide = next((data_dir / "her2st" / "ST-imgs" / "C" / "C3").glob("*.jpg"))
    out = tmp_path / "slide.h5ad"
    assert (
        main(["predict", str(slide), "--model", str(tmp_path / "m"), "--out", str(out), "--quiet"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "pseudo-spots on the tissue" in printed and "into X of" in printed
    grid = ad.read_h5ad(out)
    assert list(grid.var_names) == model.genes and grid.n_obs > 100
    assert np.isfinite(grid.X).all() and "stmix_patches" not in grid.obsm
    axes = sc.pl.spatial(grid, color=model.genes[0], show=False)  # a map straight from the file
    assert axes[0].get_title() == model.genes[0]
    assert out.stat().st_size < 1_000_000
    spacing = grid.uns["spatial"][slide.stem]["scalefactors"]["spacing_fullres"]
    assert spacing == pytest.approx(config["spot_diameter_px"])  # spots touching, by default
    assert out.with_suffix(".png").stat().st_size > 10_000


@pytest.fixture
def files(prepared, tmp_path):
    """A prepared file, a saved model and an existing output."""
    model = stmix.tl.fit(prepared, augment="none", **{**TINY_FIT, "epochs": 1})
    model.save(tmp_path / "m")
    prepared.write_h5ad(tmp_path / "in.h5ad")
    (tmp_path / "existing.h5ad").write_bytes((tmp_path / "in.h5ad").read_bytes())
    return tmp_path


def test_a_failed_write_keeps_the_existing_output(files):
    """A full disk (ulimit -f): the old output is intact, no partial file is left."""
    import resource
    import subprocess
    import sys

    existing = files / "existing.h5ad"
    before = existing.read_bytes()
    limit = 256 * 1024  # the new file is larger: its write fails half-way

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stmix.cli",
            "impute",
            str(files / "in.h5ad"),
            "--model",
            str(files / "m"),
            "--out",
            str(existing),
            "--quiet",
        ],
        preexec_fn=small_files,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("stmix impute: error:") and "Traceback" not in result.stderr
    assert f"could not write {existing}" in result.stderr
    assert "the existing file is as it was" in result.stderr
    assert existing.read_bytes() == before
    assert not [p.name for p in files.iterdir() if p.name.startswith(".")]  # no partial file


def test_cli_errors_in_cli_words(files, data_dir, capsys):
    def error(args):
        assert main(args) == 2
        return capsys.readouterr().err

    (files / "notes.txt").write_text("not an AnnData")
    assert "is not an .h5ad file" in error(["evaluate", str(files / "notes.txt")])
    assert "is a folder; give a file name" in error(
        ["impute", str(files / "in.h5ad"), "--model", str(files / "m"), "--out", str(files)]
    )
    unsplit = ad.read_h5ad(files / "in.h5ad")
    del unsplit.obs["stmix_split"]
    unsplit.write_h5ad(files / "unsplit.h5ad")
    assert "--split all" in error(["evaluate", str(files / "unsplit.h5ad")])
    imageless = ad.read_h5ad(files / "in.h5ad")
    del imageless.uns["spatial"], imageless.obsm["stmix_patches"], imageless.uns["stmix_patches"]
    imageless.write_h5ad(files / "imageless.h5ad")
    err = error(
        [
            "impute",
            str(files / "imageless.h5ad"),
            "--model",
            str(files / "m"),
            "--out",
            str(files / "x.h5ad"),
        ]
    )
    assert "uns['spatial'] is missing" in err and "image=" not in err  # no --image option
    assert "`--n-genes` must be" in error(["her2st", "C2", "--n-genes", "0", "--quiet"])
    # one folder level off: the message says which folder to pass
    err = error(["her2st", "C2", "--root", str(data_dir), "--quiet"])
    assert f"use --root {data_dir / 'her2st'}." in err and "root=" not in err
    # Python's parameter names become the command's options
    err = error(
        [
            "fit",
            str(files / "in.h5ad"),
            "--model",
            str(files / "m2"),
            "--batch-size",
            "0",
            "--quiet",
        ]
    )
    assert "`--batch-size`" in err and "batch_size" not in err
    import torch

    if not torch.cuda.is_available():  # Lightning's refusal, in the command's words
        args = ["fit", str(files / "in.h5ad"), "--model", str(files / "m3"), "--size", "48"]
        assert main([*args, "--accelerator", "gpu"]) == 2
        said = capsys.readouterr()
        assert "finds no CUDA GPU" in said.err and "pass --accelerator cpu" in said.err
        assert "accelerator=" not in said.err and "cutting" not in said.out  # before the patches
        assert not (files / "m3").exists()
    (files / "mine").mkdir()
    (files / "mine" / "config.json").write_text("{}")
    err = error(
        ["fit", str(files / "in.h5ad"), "--model", str(files / "mine"), "--overwrite", "--quiet"]
    )
    assert "holds files stmix did not write" in err
    assert (files / "mine" / "config.json").read_text() == "{}"
    err = error(["fit", str(files / "in.h5ad"), "--model", str(files / "m"), "--quiet"])
    assert "--overwrite" in err
    with pytest.raises(FileNotFoundError):
        main(["--debug", "evaluate", str(files / "missing.h5ad")])


def test_evaluate_warns_about_raw_counts(her2st, tmp_path, capsys, caplog):
    adata = her2st("C2")[:, :40].copy()
    adata.X = adata.X.toarray()
    stmix.pp.split(adata)
    adata.layers["stmix"] = np.ones((adata.n_obs, 40), dtype=np.float32)
    adata.write_h5ad(tmp_path / "counts.h5ad")
    assert main(["evaluate", str(tmp_path / "counts.h5ad")]) == 0
    assert "looks like raw counts" in caplog.text  # stderr in a terminal
    assert "training mean everywhere, for scale" in capsys.readouterr().out


def test_predict_checks_its_genes_before_importing_torch(files, data_dir):
    """A misspelt --genes fails in well under 3 s, before torch loads, and writes nothing."""
    import subprocess
    import sys
    import time

    slide = next((data_dir / "her2st" / "ST-imgs" / "C" / "C3").glob("*.jpg"))
    out = files / "never.h5ad"
    argv = ["predict", str(slide), "--model", str(files / "m"), "--genes", "NOTAGENE"]
    argv += ["--out", str(out)]
    script = (
        "import sys; from stmix.cli import main; status = main(sys.argv[1:]); "
        "print('torch loaded' if 'torch' in sys.modules else 'no torch'); sys.exit(status)"
    )
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=60
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 2 and seconds < 3  # measured: 0.35 s on 2 CPU cores
    assert "--genes names genes the model does not predict: NOTAGENE" in result.stderr
    assert result.stdout.strip() == "no torch" and not out.exists()
    assert not out.with_suffix(".png").exists()


def test_predict_on_a_blank_slide_names_the_tissue_option(files, capsys):
    """The detector finds no tissue on blank glass: the error names --tissue; `all` tiles it."""
    blank = files / "blank.png"
    Image.fromarray(np.full((600, 600, 3), 250, dtype=np.uint8)).save(blank)
    argv = ["predict", str(blank), "--model", str(files / "m"), "--spot-diameter", "40"]
    argv += ["--out", str(files / "pred.h5ad"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "No tissue was found" in err and "Pass --tissue all." in err and "mask" not in err
    assert not (files / "pred.h5ad").exists()
    assert main([*argv, "--tissue", "all"]) == 0
    assert ad.read_h5ad(files / "pred.h5ad").n_obs == 247  # the whole image, hexagonal


@pytest.mark.parametrize(
    ("raised", "status"),
    [
        (stmix.errors.MissingKeyError("adata.layers['x'] does not exist."), 2),
        (stmix.errors.InputTypeError("`genes` must be names."), 2),
        (stmix.errors.UnavailableError("Cannot fetch the weights."), 2),
        (ValueError("`epochs` must be at least 1."), 2),
        (KeyError("spot_scale"), 1),  # raised by no check of stmix: a bug
        (TypeError("unsupported operand"), 1),
        (RuntimeError("shape mismatch"), 1),
    ],
)
def test_user_errors_are_one_line_and_bugs_ask_for_debug(raised, status, monkeypatch, capsys):
    """stmix's own errors (and ValueError) are the user's; anything else is reported as a bug."""

    def fails(args):
        raise raised

    monkeypatch.setattr("stmix.cli._evaluate", fails)
    assert main(["evaluate", "in.h5ad"]) == status
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == (1 if status == 2 else 2)
    assert ("--debug" in err) == (status == 1)
    assert str(raised.args[0]) in err


def test_predict_a_whole_slide_and_a_cohort_of_them(files, c2_slides, tmp_path, capsys):
    out = tmp_path / "svs.h5ad"
    argv = ["predict", str(c2_slides["svs"]), "--model", str(files / "m"), "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    grid = ad.read_h5ad(out)
    entry = grid.uns["spatial"]["C2"]
    assert entry["metadata"]["microns_per_pixel"] == pytest.approx(c2_slides["mpp"])  # the SVS's
    assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(100 / c2_slides["mpp"])
    assert grid.n_obs > 100 and out.with_suffix(".png").is_file()
    # the flag of unfamiliar tissue and the spread come by default for a calibrated model
    assert {"stmix_std", "stmix_lower", "stmix_upper"} <= set(grid.layers)
    assert grid.obs["stmix_ood"].between(0, 1).all()
    assert grid.uns["stmix_impute"]["params"]["interval"] == 0.9

    other = tmp_path / "other.tif"
    other.write_bytes(c2_slides["generic"].read_bytes())
    folder = tmp_path / "cohort"
    cohort = ["predict", str(c2_slides["svs"]), str(other), "--model", str(files / "m")]
    assert main([*cohort, "--out", str(folder), "--quiet"]) == 0
    assert "2 slides predicted, 0 already done" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == [
        "C2.h5ad",
        "C2.png",
        "other.h5ad",
        "other.png",
    ]
    np.testing.assert_allclose(ad.read_h5ad(folder / "C2.h5ad").X, grid.X, rtol=1e-5, atol=1e-6)
    assert main([*cohort, "--out", str(folder), "--quiet"]) == 0
    assert "0 slides predicted, 2 already done" in capsys.readouterr().out
    assert main([*cohort, "--out", str(tmp_path / "x.h5ad"), "--quiet"]) == 2
    assert "names a file: with several slides it is the folder" in capsys.readouterr().err
