"""Inputs that used to give silent wrong results or lose data, refused with a clear message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import stmix
from stmix.cli import main
from tests.support import TINY, assert_unchanged, snapshot


def _two_sections_without_column(data_dir):
    both = stmix.datasets.her2st(["C2", "C3"], root=data_dir / "her2st")
    del both.obs["library_id"]
    labels = np.random.default_rng(0).choice(["train", "val", "test"], both.n_obs)
    both.obs["stmix_split"] = labels
    both.obs["stmix_split"] = both.obs["stmix_split"].astype("category")
    return both


@pytest.mark.parametrize(
    "step",
    [
        lambda a: stmix.pp.patches(a, size=32, library_id="C2", progress=False),
        lambda a: stmix.pp.split(a, key_added="other_split"),
        lambda a: stmix.pp.neighbors(a, 5),
    ],
    ids=["patches", "split", "neighbors"],
)
def test_two_sections_without_their_column_are_refused(data_dir, step):
    both = _two_sections_without_column(data_dir)
    before = snapshot(both)
    with pytest.raises(ValueError, match="library_key"):
        step(both)
    assert_unchanged(both, before)


def test_a_subset_after_neighbors_is_refused(prepared):
    subset = prepared[prepared.obs["stmix_split"] != "val"][::2].copy()
    before = snapshot(subset)
    with pytest.raises(ValueError, match=r"subset .* Run stmix\.pp\.neighbors"):
        stmix.tl.fit(subset, augment="snr", **TINY)
    assert_unchanged(subset, before)
    stmix.pp.neighbors(subset, 5)  # the graph made again fits
    stmix.tl.fit(subset, augment="snr", **{**TINY, "epochs": 1})
    n_train = int((subset.obs["stmix_split"] == "train").sum())
    assert subset.uns["stmix_neighbors"]["params"]["n_train"] == n_train


def test_nan_weights_are_refused_at_load(prepared, tmp_path):
    model = stmix.tl.fit(prepared, augment="none", **{**TINY, "epochs": 1})
    model.save(tmp_path / "m")
    state = load_file(tmp_path / "m" / "model.safetensors")
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name][0] = float("nan")
    save_file(state, tmp_path / "m" / "model.safetensors")
    with pytest.raises(ValueError, match="NaN or infinite weights"):
        stmix.tl.load(tmp_path / "m")


def test_clip_on_negative_expression_warns(prepared, caplog):
    prepared.X = prepared.X - prepared.X.mean(axis=0)  # centred: about half negative
    model = stmix.tl.fit(prepared, augment="none", **{**TINY, "epochs": 1})
    stmix.tl.impute(prepared, model, progress=False)
    assert "are negative" in caplog.text and "clip=False" in caplog.text
    caplog.clear()
    stmix.tl.impute(prepared, model, clip=False, progress=False)
    assert "are negative" not in caplog.text


def test_cli_outputs_that_would_overwrite_each_other(prepared, data_dir, tmp_path, capsys):
    model = stmix.tl.fit(prepared, augment="none", **{**TINY, "epochs": 1})
    model.save(tmp_path / "m")
    slide = next((data_dir / "her2st" / "ST-imgs" / "C" / "C3").glob("*.jpg"))
    out = tmp_path / "res.png"
    args = ["predict", str(slide), "--model", str(tmp_path / "m"), "--out", str(out), "--quiet"]
    assert main(args) == 2
    assert "--png and --out name the same file" in capsys.readouterr().err
    assert not out.exists()
    prepared.write_h5ad(tmp_path / "in.h5ad")
    inside = tmp_path / "m2" / "fit.h5ad"
    fit = ["fit", str(tmp_path / "in.h5ad"), "--model", str(tmp_path / "m2"), "--out"]
    assert main([*fit, str(inside)]) == 2
    assert "lies in the model folder --model" in capsys.readouterr().err
    same = ["evaluate", str(tmp_path / "in.h5ad"), "--csv", str(tmp_path / "in.h5ad")]
    assert main(same) == 2 and "name the same file" in capsys.readouterr().err
    before = (tmp_path / "in.h5ad").read_bytes()
    bad = ["impute", str(tmp_path / "in.h5ad"), "--model", str(tmp_path / "m"), "--out"]
    assert main([*bad, str(tmp_path / "in.h5ad"), "--key", "", "--quiet"]) == 2
    assert "non-empty" in capsys.readouterr().err
    assert (tmp_path / "in.h5ad").read_bytes() == before  # its own input kept


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_fit_with_a_message_and_143(prepared, tmp_path):
    prepared.write_h5ad(tmp_path / "in.h5ad")
    command = [
        sys.executable, "-m", "stmix.cli", "fit", str(tmp_path / "in.h5ad"), "--model",
        str(tmp_path / "m"), "--backbone", "test_efficientnet", "--no-pretrained", "--size", "32",
        "--epochs", "500", "--patience", "0", "--augment", "none",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        deadline = time.time() + 120
        while time.time() < deadline and b"fit none" not in log.read_bytes():
            time.sleep(0.5)
        assert b"fit none" in log.read_bytes()  # in the training loop, its bar on stderr
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    err = log.read_text()
    assert process.returncode == 143, err[-2000:]
    assert "terminated (SIGTERM); nothing was written" in err
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
