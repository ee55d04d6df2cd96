"""Every Python block of the README runs, in order, on the real data, as a user pastes them.

Each block runs with small settings (one epoch, fewer sections, smaller patches, timm's test
network); the replacements are listed here and each must still match the block's text, so the
README cannot drift from what runs. ``benchmarks/readme.py`` runs the many-sections block with
its own settings and records its held-out PCC.
"""

from __future__ import annotations

import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

import stmix
from tests.readme_blocks import python_blocks, shrink
from tests.slides import write_slide

#: timm's smallest EfficientNet without downloaded weights: the blocks' code, not Lite0's cost
TINY = 'backbone="test_efficientnet", pretrained=False'
SMALL = {
    "Quickstart": {'augment="snr")': f'augment="snr", epochs=1, {TINY})'},
    "Where a map can be trusted": {},
    "Many sections, and slides nobody measured": {
        '["C2", "C3", "C4", "C5", "C6"]': '["C5", "C6"]',
        "epochs=12": f"epochs=1, {TINY}",
    },
    "Whole-slide images, Space Ranger and HEST folders, cohorts": {},
    "Frozen encoders: the cheap baseline, and SNR-ST-Mix on embeddings": {
        "size=224": "size=64",
        "embed(adata)": f"embed(adata, {TINY})",
        'augment="snr"\n)': 'augment="snr", epochs=2\n)',
    },
}


@pytest.fixture
def in_a_user_folder(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("STMIX_DATA_DIR", str(data_dir))
    monkeypatch.chdir(tmp_path)
    c6 = next((data_dir / "her2st" / "ST-imgs" / "C" / "C6").glob("*.jpg"))
    os.symlink(c6, tmp_path / "archived_slide.jpg")  # a slide the model never saw measured
    section = stmix.datasets.her2st("C6", root=data_dir / "her2st")
    with stmix._image.large_images(), Image.open(c6) as image:  # and as a scanner writes it
        write_slide(
            tmp_path / "archived_scan.svs",
            np.asarray(image.convert("RGB")),
            mpp=section.uns["spatial"]["C6"]["metadata"]["microns_per_pixel"],
            flavour="aperio",
        )
    yield tmp_path
    plt.close("all")


def test_every_readme_block_runs(in_a_user_folder):
    blocks = python_blocks()
    assert list(blocks) == list(SMALL), "a README block without a test, or a test without one"
    namespace: dict = {}
    shown = {}
    for name, code in blocks.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(shrink(code, SMALL[name]), f"README: {name}", "exec"), namespace)
        plt.close("all")
        if name == "Where a map can be trusted":
            trusted = dict(namespace["adata"].uns["stmix_metrics"])
        # what Python and Jupyter show a user by default (deprecations aimed at libraries aside)
        shown[name] = [
            f"{w.category.__name__}: {w.message} ({w.filename})"
            for w in caught
            if issubclass(w.category, (FutureWarning, UserWarning, RuntimeWarning))
        ]
    assert not shown["Quickstart"], shown["Quickstart"]

    # the quickstart's files, read back as a user would
    import anndata as ad

    import stmix

    saved = ad.read_h5ad(in_a_user_folder / "c3_imputed.h5ad")
    predicted = saved.var_names[saved.var["stmix_predicted"].to_numpy()]
    assert set(predicted) == set(stmix.tl.load("c3_model").genes)
    assert len(predicted) == 64 and "stmix_metrics" in saved.uns

    # trust: C3's test spots are exchangeable with its validation spots: about 90% inside
    assert 0.8 <= trusted["coverage"] <= 0.98 and trusted["interval"] == 0.9

    # many sections: genes from the training spots, validation from every training section
    adata, model, pred = namespace["adata"], namespace["model"], namespace["pred"]
    train = (adata.obs["stmix_split"] == "train").to_numpy()
    mean = np.asarray(adata.X[train].mean(axis=0)).ravel()
    assert set(model.genes) == set(adata.var_names[np.argsort(-mean, kind="stable")[:250]])
    c5 = (adata.obs["library_id"] == "C5").to_numpy()
    assert (adata.obs["stmix_split"][c5] == "val").sum() == int(np.floor(c5.sum() * 0.1))
    assert np.isfinite(adata.uns["stmix_metrics"]["by_library"]["C6"]["pcc"])
    assert list(pred.var_names) == list(model.genes) and np.isfinite(pred.X).all()
    assert pred.n_obs == namespace["slide"].n_obs > 400  # C6's tissue, tiled at 100 µm

    # whole-slide images: the SVS's own pixel size, one output per slide
    wsi, table = namespace["wsi"], namespace["table"]
    mpp = wsi.uns["spatial"]["archived_scan"]["metadata"]["microns_per_pixel"]
    assert mpp == pytest.approx(0.69, abs=0.02) and wsi.obsm["stmix_patches"].shape[1] == 64
    assert list(table["status"]) == ["predicted", "predicted"]
    assert [ad.read_h5ad(f).n_vars for f in table["output"]] == [len(model.genes)] * 2

    # frozen encoders: both fits on the embedding of every spot
    assert adata.obsm["stmix_embedding"].shape[0] == adata.n_obs
    assert namespace["probe"].genes == namespace["head"].genes == model.genes
