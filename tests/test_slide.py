"""Whole-slide images read region by region: every layout users have, the same patches as in
memory, the pixel size from the file, and one clear line for each broken slide."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

import stmix
from stmix import _slide
from stmix._image import SpotImage
from stmix._slide import Slide
from stmix.errors import UnavailableError
from stmix.pp._patches import cut_patches
from tests.slides import write_slide
from tests.support import assert_unchanged, snapshot

PYRAMIDS = ("svs", "generic", "ome")


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.fixture
def reads(monkeypatch):
    """Every region a slide decodes: (level, width, height)."""
    seen = []
    original = Slide._read

    def spy(self, level, x, y, width, height):
        seen.append((level, width, height))
        return original(self, level, x, y, width, height)

    monkeypatch.setattr(Slide, "_read", spy)
    return seen


@pytest.mark.parametrize("layout", PYRAMIDS)
def test_every_pyramid_is_read_with_its_pixel_size(c2_slides, layout):
    slide = Slide.open(c2_slides[layout])
    assert slide.backend == "tiffslide" and len(slide.levels) == 3
    assert slide.size == (9274, 9911) and slide.levels[2] == (2319, 2478)
    assert slide.mpp == pytest.approx(c2_slides["mpp"], rel=1e-9)  # Aperio MPP, tags, OME
    region = slide.read(0, 4000, 5000, 512, 384)
    assert region.shape == (384, 512, 3) and region.dtype == np.uint8
    assert _mad(region, c2_slides["image"][5000:5384, 4000:4512]) < 2  # JPEG tiles, quality 90
    assert stmix.pp.tile(c2_slides[layout], spot_diameter=100, mpp="slide", tissue="all").uns[
        "spatial"
    ].keys() == {"C2"}


def test_a_flat_tiff_is_read_by_region_and_in_strips(c2_slides, reads, monkeypatch):
    slide = Slide.open(c2_slides["flat"])
    assert slide.levels == [(2048, 2048)] and slide.mpp == pytest.approx(c2_slides["mpp"])
    crop = c2_slides["image"][3000:5048, 3000:5048]
    np.testing.assert_array_equal(slide.read(0, 100, 200, 300, 50), crop[200:250, 100:400])
    monkeypatch.setattr(_slide, "STRIP_PIXELS", 3 * 2048 * 256)  # strips of 256 rows
    reads.clear()
    thumb, scale = slide.thumbnail(256)
    assert thumb.shape == (256, 256, 3) and scale == pytest.approx(0.125)
    assert len(reads) == 8 and all(r == (0, 2048, 256) for r in reads)
    expected = np.asarray(Image.fromarray(crop).resize((256, 256), Image.Resampling.BOX))
    assert _mad(thumb, expected) < 1


def test_off_the_slide_is_white_and_thumbnails_read_a_coarse_level(c2_slides, reads):
    slide = Slide.open(c2_slides["svs"])
    corner = slide.read(0, -100, -50, 300, 200)
    assert (corner[:50] == 255).all() and (corner[:, :100] == 255).all()
    assert _mad(corner[50:, 100:], c2_slides["image"][:150, :200]) < 2
    assert (slide.read(1, 10**6, 10**6, 20, 20) == 255).all()
    reads.clear()
    thumb, scale = slide.thumbnail(600)
    assert max(thumb.shape[:2]) == 600 and scale == pytest.approx(600 / 9911, rel=1e-3)
    assert {level for level, _, _ in reads} == {2}  # never level 0
    expected = Image.fromarray(c2_slides["image"]).resize(thumb.shape[1::-1], Image.Resampling.BOX)
    assert _mad(thumb, np.asarray(expected)) < 3


@pytest.mark.parametrize("size", [64, 16])  # 64: read from level 0; 16: from level 1
@pytest.mark.parametrize("layout", ["svs", "ome"])
def test_patches_from_a_slide_equal_the_in_memory_path(her2st, c2_slides, layout, size, reads):
    in_memory = her2st("C2")
    stmix.pp.patches(in_memory, size=size, image=c2_slides["image"], progress=False)
    from_slide = her2st("C2")
    from_slide.uns["spatial"]["C2"]["metadata"]["source_image_path"] = str(c2_slides[layout])
    stmix.pp.patches(from_slide, size=size, progress=False)
    assert from_slide.uns["stmix_patches"]["params"]["source"].startswith("full-resolution")
    assert _mad(from_slide.obsm["stmix_patches"], in_memory.obsm["stmix_patches"]) < 2
    side = from_slide.uns["stmix_patches"]["params"]["side_fullres"]
    assert {level for level, _, _ in reads} == {0 if side / size < 8 else 1}
    biggest = max(width * height for _, width, height in reads)
    assert biggest < 2600**2 < 9274 * 9911 / 10  # regions of a cell, never the slide


def test_the_flat_crop_gives_the_in_memory_patches(c2_slides):
    crop = c2_slides["image"][3000:5048, 3000:5048]
    grid = stmix.pp.tile(crop, spot_diameter=150, spacing=150, tissue="all")
    in_memory = stmix.pp.patches(grid, size=48, progress=False, copy=True)
    stmix.pp.patches(grid, size=48, image=c2_slides["flat"], progress=False)
    assert _mad(grid.obsm["stmix_patches"], in_memory.obsm["stmix_patches"]) < 0.05  # lossless


def test_tiffslide_and_openslide_cut_the_same_patches(her2st, c2_slides):
    openslide = pytest.importorskip("openslide")
    coords = her2st("C2").obsm["spatial"]
    side = 145.3
    mine = Slide.open(c2_slides["generic"])
    theirs = Slide(mine.path, openslide.OpenSlide(str(mine.path)), "openslide", mine.mpp)
    assert theirs.levels == mine.levels and theirs.recorded_mpp() == pytest.approx(mine.mpp)
    for size in (64, 32):
        a = cut_patches(SpotImage(mine, 1.0, "tiffslide"), coords, side, size)
        b = cut_patches(SpotImage(theirs, 1.0, "openslide"), coords, side, size)
        assert _mad(a, b) < 0.5


def test_tiling_a_slide_in_micrometres(c2_slides):
    from_jpeg = stmix.pp.tile(
        c2_slides["image"], spot_diameter=100, spacing=200, mpp=c2_slides["mpp"]
    )
    grid = stmix.pp.tile(c2_slides["svs"], spot_diameter=100, spacing=200, mpp="slide")
    assert abs(grid.n_obs - from_jpeg.n_obs) <= 0.03 * from_jpeg.n_obs
    entry = grid.uns["spatial"]["C2"]
    assert entry["metadata"]["microns_per_pixel"] == pytest.approx(c2_slides["mpp"])
    assert entry["metadata"]["source_image_path"] == str(c2_slides["svs"].resolve())
    assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(100 / c2_slides["mpp"])
    assert max(entry["images"]["hires"].shape) == 2000
    overridden = stmix.pp.tile(c2_slides["svs"], spot_diameter=100, spacing=200, mpp=1.0)
    assert overridden.n_obs > grid.n_obs  # pixels taken as larger: 200 µm is fewer of them
    stmix.pp.patches(grid, side_um=50, size=32, progress=False)  # mpp from the tiled slide
    assert grid.uns["stmix_patches"]["params"]["side_fullres"] == pytest.approx(
        50 / c2_slides["mpp"]
    )


def test_broken_slides_are_one_clear_line_and_nothing_is_written(her2st, c2_slides, tmp_path):
    adata = her2st("C2")
    before = snapshot(adata)
    cut = tmp_path / "cut.svs"
    data = c2_slides["svs"].read_bytes()
    cut.write_bytes(data[: len(data) // 4])  # a copy that stopped in level 0's tiles
    with pytest.raises(
        ValueError, match=r"cut\.svs is truncated: its pixel data runs past"
    ) as error:
        stmix.pp.patches(adata, size=32, image=cut, progress=False)
    assert "\n" not in str(error.value)
    assert_unchanged(adata, before)
    damaged = tmp_path / "damaged.svs"
    offsets = tifffile.TiffFile(c2_slides["svs"]).pages[0].dataoffsets
    middle = int(offsets[len(offsets) // 2])
    damaged.write_bytes(data[:middle] + bytes(len(data) // 3) + data[middle + len(data) // 3 :])
    with pytest.raises(ValueError, match=r"damaged.svs could not be read at .* damaged or trunc"):
        stmix.pp.patches(adata, size=32, image=damaged, progress=False)
    assert_unchanged(adata, before)
    (tmp_path / "garbage.svs").write_bytes(b"not a slide at all" * 100)
    with pytest.raises(ValueError, match="cannot be read as a slide"):
        stmix.pp.tile(tmp_path / "garbage.svs", spot_diameter=10)
    bare = write_slide(tmp_path / "bare.tif", c2_slides["image"][4000:5024, 4000:5024], mpp=None)
    assert Slide.open(bare).mpp is None
    with pytest.raises(
        ValueError, match=r"records no pixel size.*pass its pixel size in µm with `mpp=`"
    ):
        stmix.pp.tile(bare, spot_diameter=55, mpp="slide")
    assert stmix.pp.tile(bare, spot_diameter=55, mpp=0.5).uns["spatial"]["bare"]["metadata"][
        "microns_per_pixel"
    ] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="does not fit the 9274 × 9911 px image"):
        stmix.pp.tile(c2_slides["svs"], spot_diameter=8000, mpp="slide")
    grey = np.zeros((1024, 1024), dtype=np.uint16)
    with tifffile.TiffWriter(tmp_path / "grey.tif") as tif:  # a 16-bit fluorescence pyramid
        tif.write(grey, tile=(256, 256), subifds=1, metadata=None)
        tif.write(grey[::2, ::2], tile=(256, 256), subfiletype=1, metadata=None)
    with pytest.raises(
        ValueError, match="1-channel uint16 pixels: stmix reads H&E slides of 8-bit"
    ):
        stmix.pp.tile(tmp_path / "grey.tif", spot_diameter=10)
    small = tmp_path / "small16.tif"
    tifffile.imwrite(small, (np.arange(64 * 64).reshape(64, 64) * 8).astype(np.uint16))
    assert Slide is not None and stmix.pp.tile(small, spot_diameter=8, tissue="all").n_obs > 0


def test_without_the_readers_the_error_names_the_extra(c2_slides, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tiffslide", None)  # import tiffslide raises ImportError
    with pytest.raises(UnavailableError, match=r"needs tiffslide.*pip install 'stmix\[wsi\]'"):
        Slide.open(c2_slides["svs"])
    monkeypatch.setitem(sys.modules, "openslide", None)
    mirax = tmp_path / "slide.mrxs"
    shutil.copy(c2_slides["svs"], mirax)
    with pytest.raises(UnavailableError, match=r"only OpenSlide reads.*stmix\[wsi\]"):
        Slide.open(mirax)


def test_patches_of_a_slide_stream_to_a_store(her2st, c2_slides, tmp_path):
    in_memory = her2st("C2")
    in_memory.uns["spatial"]["C2"]["metadata"]["source_image_path"] = str(c2_slides["svs"])
    stored = in_memory.copy()
    stmix.pp.patches(in_memory, size=32, progress=False)
    stmix.pp.patches(stored, size=32, store=tmp_path / "c2.zarr", progress=False)
    assert stored.uns["stmix_patches"]["params"]["store"] == str(tmp_path / "c2.zarr")
    np.testing.assert_array_equal(
        np.asarray(stored.obsm["stmix_patches"]), in_memory.obsm["stmix_patches"]
    )
