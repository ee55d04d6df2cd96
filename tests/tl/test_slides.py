"""A cohort of slides predicted one output per slide: resumable, and spread over processes."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import stmix
from stmix.tl import _slides
from tests.support import TINY


@pytest.fixture(scope="module")
def model(_prepared_c2):
    return stmix.tl.fit(_prepared_c2.copy(), augment="none", **{**TINY, "epochs": 1})


@pytest.fixture
def cohort(c2_slides, data_dir):
    """C2 as an Aperio slide (it records 0.69 µm/px) and C3 as the JPEG it comes as."""
    c3 = next((data_dir / "her2st" / "ST-imgs" / "C" / "C3").glob("*.jpg"))
    return [str(c2_slides["svs"]), str(c3)]


def test_each_slide_once_and_a_second_run_skips_them(model, cohort, tmp_path):
    out = tmp_path / "predicted"
    done = stmix.tl.predict_slides(cohort, model, out, progress=False)
    assert list(done["status"]) == ["predicted", "predicted"]
    files = [out / "C2.h5ad", out / f"{cohort[1].rsplit('/', 1)[1].removesuffix('.jpg')}.h5ad"]
    assert list(done["output"]) == [str(f) for f in files]
    for slide, path in zip(cohort, files, strict=True):
        written = ad.read_h5ad(path)
        alone = _slides.predict_slide(slide, model, _slides.geometry(model, slide), progress=False)
        assert list(written.var_names) == model.genes and written.n_obs > 100
        np.testing.assert_allclose(written.X, alone.X, rtol=1e-5, atol=1e-6)
        assert list(written.uns["spatial"][next(iter(written.uns["spatial"]))]["images"]) == [
            "lowres"
        ]
    c2 = ad.read_h5ad(files[0]).uns["spatial"]["C2"]
    assert c2["metadata"]["microns_per_pixel"] == pytest.approx(0.688, abs=1e-3)  # from the file
    assert c2["scalefactors"]["spot_diameter_fullres"] == pytest.approx(100 / 0.688098, rel=1e-3)

    stamps = [f.stat().st_mtime_ns for f in files]
    files[1].unlink()  # as if the run had stopped before C3
    again = stmix.tl.predict_slides(cohort, model, out, progress=False)
    assert list(again["status"]) == ["skipped", "predicted"]
    assert files[0].stat().st_mtime_ns == stamps[0] and files[1].is_file()


def test_two_processes_share_the_slides_and_predict_the_same(model, cohort, tmp_path):
    one = stmix.tl.predict_slides(cohort, model, tmp_path / "one", progress=False)
    two = stmix.tl.predict_slides(
        cohort,
        model,
        tmp_path / "two",
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",  # spawned: a fork of a process whose torch threads ran can hang
        progress=False,
    )
    assert list(two["status"]) == ["predicted", "predicted"]
    for a, b in zip(one["output"], two["output"], strict=True):
        np.testing.assert_allclose(ad.read_h5ad(b).X, ad.read_h5ad(a).X, rtol=1e-5, atol=1e-6)


def test_a_cohort_is_checked_before_any_slide_is_predicted(model, cohort, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"missing\.svs does not exist"):
        stmix.tl.predict_slides([*cohort, str(tmp_path / "missing.svs")], model, out)
    with pytest.raises(ValueError, match="would both be written to"):
        stmix.tl.predict_slides([cohort[0], cohort[0]], model, out)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file: pass the folder"):
        stmix.tl.predict_slides(cohort, model, tmp_path / "file")
    with pytest.raises(TypeError, match="list of files"):
        stmix.tl.predict_slides(cohort[0], model, out)
    assert not out.exists()
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (600, 600), (255, 255, 255)).save(blank)
    with pytest.raises(ValueError, match=r"^blank\.png: No tissue was found"):
        stmix.tl.predict_slides([cohort[0], str(blank)], model, out, progress=False)
    assert (out / "C2.h5ad").is_file() and not (out / "blank.h5ad").exists()  # C2 is kept
