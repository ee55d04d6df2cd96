from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from PIL import Image

import stmix
from tests.support import assert_unchanged, snapshot


def _full_image(adata, library="C2"):
    path = adata.uns["spatial"][library]["metadata"]["source_image_path"]
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _square(full, x, y, side, size, crop=True):
    """The square of side ``side`` centred on pixel (x, y), resampled from the full image."""
    left, top = x + 0.5 - side / 2, y + 0.5 - side / 2
    if not crop:  # exactly as pp.patches resamples: the whole image and the box
        box = (left, top, left + side, top + side)
        image = Image.fromarray(full)
        return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC, box=box))
    # crop a margin around the square first: resampling reads only pixels near the box
    x0, y0 = max(int(np.floor(left)) - 8, 0), max(int(np.floor(top)) - 8, 0)
    region = np.ascontiguousarray(
        full[y0 : int(np.ceil(top + side)) + 8, x0 : int(np.ceil(left + side)) + 8]
    )
    box = (left - x0, top - y0, left - x0 + side, top - y0 + side)
    return np.asarray(
        Image.fromarray(region).resize((size, size), Image.Resampling.BICUBIC, box=box)
    )


def test_patch_is_the_full_resolution_square_around_the_spot(her2st):
    adata = her2st("C2")
    side = adata.uns["spatial"]["C2"]["scalefactors"]["spot_diameter_fullres"]
    stmix.pp.patches(adata, size=64, progress=False)
    patches = adata.obsm["stmix_patches"]
    assert patches.shape == (adata.n_obs, 64, 64, 3) and patches.dtype == np.uint8

    full = _full_image(adata)
    errors, one_pixel_off, one_spot_off = [], [], []
    for i in range(0, adata.n_obs, 15):
        x, y = adata.obsm["spatial"][i]
        patch = patches[i].astype(float)
        errors.append(np.abs(patch - _square(full, x, y, side, 64)).mean())
        one_pixel_off.append(np.abs(patch - _square(full, x + 1, y, side, 64)).mean())
        one_spot_off.append(np.abs(patch - _square(full, x + side, y, side, 64)).mean())
    # the JPEG is decoded at half size (64 px patches from 145 px spots): ~1 grey level off
    assert max(errors) < 3, errors
    assert np.mean(one_pixel_off) > 3 * np.mean(errors)
    assert min(one_spot_off) > 5 * max(errors)
    params = adata.uns["stmix_patches"]["params"]
    assert params["size"] == 64 and params["side_fullres"] == pytest.approx(side)
    assert "full-resolution" in params["source"]

    # from the full array no decoding differs: the patch is that square exactly
    stmix.pp.patches(adata, size=64, image=full, progress=False)
    x, y = adata.obsm["spatial"][7]
    expected = _square(full, x, y, side, 64, crop=False)
    np.testing.assert_array_equal(adata.obsm["stmix_patches"][7], expected)


def test_every_image_form_gives_the_same_patches(her2st):
    adata = her2st("C2")[:12].copy()
    stmix.pp.patches(adata, size=32, progress=False)
    default = adata.obsm["stmix_patches"].copy()
    path = adata.uns["spatial"]["C2"]["metadata"]["source_image_path"]
    full = _full_image(adata)
    for image in (path, full, Image.fromarray(full)):
        stmix.pp.patches(adata, size=32, image=image, progress=False)
        # a file path may be decoded at reduced size (JPEG draft), arrays are not
        assert np.abs(adata.obsm["stmix_patches"].astype(int) - default).mean() < 3


def test_hires_fallback_matches_full_resolution_at_hires_scale(her2st):
    adata = her2st("C3")
    stmix.pp.patches(adata, size=24, img_key="hires", progress=False)
    assert adata.uns["stmix_patches"]["params"]["source"] == "'hires' image"
    hires = adata.obsm["stmix_patches"].astype(float)
    stmix.pp.patches(adata, size=24, progress=False)
    full = adata.obsm["stmix_patches"].astype(float)
    corr = np.corrcoef(hires.mean(axis=(1, 2, 3)), full.mean(axis=(1, 2, 3)))[0, 1]
    assert corr > 0.95


def test_border_spots_are_padded_white(her2st):
    adata = her2st("C2")[:3].copy()
    side = adata.uns["spatial"]["C2"]["scalefactors"]["spot_diameter_fullres"]
    adata.obsm["spatial"] = adata.obsm["spatial"].copy()
    adata.obsm["spatial"][0] = [2.0, 5000.0]  # centre 2 px from the left edge
    stmix.pp.patches(adata, size=32, progress=False)
    patch = adata.obsm["stmix_patches"][0]
    assert (patch[:, :14] == 255).all()  # the half beyond the border
    # the half inside is the image there, as if the slide went on white
    full = _full_image(adata)
    padded = np.pad(full, ((0, 0), (200, 0), (0, 0)), constant_values=255)
    expected = _square(padded, 202.0, 5000.0, side, 32)
    assert np.abs(patch[:, 17:].astype(float) - expected[:, 17:]).mean() < 3


def test_spot_outside_the_image_names_the_spot(her2st):
    adata = her2st("C2")
    adata.obsm["spatial"][5] = [-500.0, 100.0]
    before = snapshot(adata)
    with pytest.raises(ValueError, match=rf"outside .*spot '{adata.obs_names[5]}'"):
        stmix.pp.patches(adata, size=32, progress=False)
    assert_unchanged(adata, before)


def test_missing_coordinates_are_a_clear_error(her2st):
    adata = her2st("C2")
    del adata.obsm["spatial"]
    before = snapshot(adata)
    with pytest.raises(KeyError, match=r"obsm\['spatial'\] is missing"):
        stmix.pp.patches(adata, progress=False)
    assert_unchanged(adata, before)


def test_no_image_anywhere_is_a_clear_error(her2st):
    adata = her2st("C2")
    del adata.uns["spatial"]
    before = snapshot(adata)
    with pytest.raises(KeyError, match=r"image=|no image"):
        stmix.pp.patches(adata, progress=False)
    assert_unchanged(adata, before)
    # an image without a spot diameter anywhere is also refused, and names the option
    with pytest.raises(KeyError, match="spot_diameter="):
        stmix.pp.patches(adata, image=np.zeros((10, 10, 3), np.uint8), progress=False)
    assert_unchanged(adata, before)


def test_library_without_usable_image_is_a_clear_error(her2st):
    adata = her2st("C2")
    entry = adata.uns["spatial"]["C2"]
    entry["metadata"]["source_image_path"] = "/nonexistent.jpg"
    entry["images"] = {}
    before = snapshot(adata)
    with pytest.raises(KeyError, match="no usable image"):
        stmix.pp.patches(adata, progress=False)
    assert_unchanged(adata, before)


@pytest.mark.parametrize(
    ("size", "error"), [(0, ValueError), (4, ValueError), (31.5, TypeError), ("64", TypeError)]
)
def test_bad_size_is_refused(her2st, size, error):
    adata = her2st("C2")
    before = snapshot(adata)
    with pytest.raises(error, match="size"):
        stmix.pp.patches(adata, size=size, progress=False)
    assert_unchanged(adata, before)


def test_squidpy_image_container(mouse_brain, mouse_brain_image):
    import squidpy as sq

    container = sq.im.ImageContainer(str(mouse_brain_image))
    stmix.pp.patches(mouse_brain, size=48, image=container, progress=False)
    from_container = mouse_brain.obsm["stmix_patches"].copy()
    stmix.pp.patches(mouse_brain, size=48, image=mouse_brain_image, progress=False)
    np.testing.assert_array_equal(from_container, mouse_brain.obsm["stmix_patches"])

    # a scaled, offset crop of the container still finds the same tissue
    crop = container.crop_corner(150, 100, size=(1500, 800), scale=0.5)
    stmix.pp.patches(mouse_brain, size=48, image=crop, progress=False)
    scaled = mouse_brain.obsm["stmix_patches"].astype(float)
    corr = np.corrcoef(scaled.ravel(), from_container.astype(float).ravel())[0, 1]
    assert corr > 0.9


def test_own_uns_spatial_skips_the_image_that_does_not_fit(mouse_brain, caplog):
    """The crop's ``hires`` image is not the crop (100 × 100 noise); ``lowres`` is."""
    with caplog.at_level(logging.WARNING, logger="stmix"):
        stmix.pp.patches(mouse_brain, size=16, progress=False)
    assert "'lowres' image" in mouse_brain.uns["stmix_patches"]["params"]["source"]
    assert "Not using the 'hires' image" in caplog.text
    assert "upsampled" in caplog.text  # 4.5 px spots at lowres: the user is told
    assert mouse_brain.obsm["stmix_patches"].shape == (mouse_brain.n_obs, 16, 16, 3)
    with pytest.raises(ValueError, match="not an RGB image"):
        stmix.pp.patches(mouse_brain, size=16, img_key="hires", progress=False)


def test_copy_leaves_the_input_alone(mouse_brain, mouse_brain_image):
    before = snapshot(mouse_brain)
    out = stmix.pp.patches(mouse_brain, size=16, image=mouse_brain_image, copy=True, progress=False)
    assert_unchanged(mouse_brain, before)
    assert out.obsm["stmix_patches"].shape == (mouse_brain.n_obs, 16, 16, 3)


def test_write_h5ad_round_trip_keeps_every_key(her2st, tmp_path):
    adata = her2st("C5")
    stmix.pp.patches(adata, size=32, progress=False)
    stmix.pp.split(adata, seed=3)
    adata.write_h5ad(tmp_path / "c5.h5ad")
    back = ad.read_h5ad(tmp_path / "c5.h5ad")
    np.testing.assert_array_equal(back.obsm["stmix_patches"], adata.obsm["stmix_patches"])
    np.testing.assert_array_equal(back.obsm["spatial"], adata.obsm["spatial"])
    assert back.obs["stmix_split"].equals(adata.obs["stmix_split"])
    assert back.uns["stmix_patches"]["params"] == adata.uns["stmix_patches"]["params"]
    entry, back_entry = adata.uns["spatial"]["C5"], back.uns["spatial"]["C5"]
    np.testing.assert_array_equal(back_entry["images"]["hires"], entry["images"]["hires"])
    assert back_entry["scalefactors"] == entry["scalefactors"]
    assert back_entry["metadata"]["source_image_path"] == entry["metadata"]["source_image_path"]
    # and the reloaded object cuts the same patches
    stmix.pp.patches(back, size=32, progress=False)
    np.testing.assert_array_equal(back.obsm["stmix_patches"], adata.obsm["stmix_patches"])


def test_sixteen_bit_grey_and_rgba_images_are_converted(her2st, tmp_path):
    """PIL clips 16-bit grey to white; stmix scales it, and flattens alpha onto white."""
    adata = her2st("C2")[:20].copy()
    stmix.pp.patches(adata, size=32, img_key="hires", progress=False)
    reference = adata.obsm["stmix_patches"].astype(float)
    entry = adata.uns["spatial"]["C2"]
    grey = entry["images"]["hires"].astype(float).mean(axis=2)
    sixteen = np.round(grey / 255 * 65535).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(sixteen).save(path)
    assert Image.open(path).mode.startswith("I")
    scale = entry["scalefactors"]["tissue_hires_scalef"]
    out = stmix.pp.patches(
        adata,
        size=32,
        image=Image.open(path).resize(
            (round(sixteen.shape[1] / scale), round(sixteen.shape[0] / scale))
        ),
        progress=False,
        copy=True,
    )
    patches = out.obsm["stmix_patches"].astype(float)
    assert patches.std() > 10  # not the white that PIL's own conversion gives
    np.testing.assert_allclose(patches.mean(axis=3).mean(), reference.mean(axis=3).mean(), atol=6)
    rgba = np.dstack([entry["images"]["hires"], np.full(grey.shape, 255, np.uint8)])
    adata.uns["spatial"]["C2"]["images"]["hires"] = rgba
    stmix.pp.patches(adata, size=32, img_key="hires", progress=False)
    np.testing.assert_array_equal(adata.obsm["stmix_patches"], reference.astype(np.uint8))


def test_image_conversion_memory_is_bounded_by_blocks(her2st, monkeypatch):
    """A float or RGBA slide is converted a block of rows at a time: no full float copy.

    Converting C2's hires image (2,000 × 1,865 px) as float64 used 3 float32 temporaries of the
    whole image (~135 MB) before; now the peak beyond input and result is one block's (made
    small here so that a whole-image copy would stand out).
    """
    import tracemalloc

    from stmix import _image

    monkeypatch.setattr(_image, "_BLOCK_VALUES", 2**18)

    hires = her2st("C2").uns["spatial"]["C2"]["images"]["hires"]
    assert _image.as_uint8_rgb(hires, "hires") is hires or hires.dtype != np.uint8
    as_float = hires.astype(np.float64) / 255
    rgba = np.dstack([hires, np.full(hires.shape[:2], 255, np.uint8)])
    for image in (as_float, rgba):
        tracemalloc.start()
        out = _image.as_uint8_rgb(image, "slide")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        np.testing.assert_array_equal(out, hires)
        block = 2 * 4 * 2 * _image._BLOCK_VALUES  # a block's float32 values and the alpha mix, ×2
        assert peak < out.nbytes + block, (peak, out.nbytes, block)
        assert out.nbytes + block < 4 * image.size, "the test would not see a whole-image copy"


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (None, {"size": 100_000}, MemoryError, r"patches of 100000 × 100000 px would take"),
        (None, {"spot_diameter": 1e6}, ValueError, "larger than the whole image"),
        ("scale0", {"img_key": "hires"}, ValueError, r"tissue_hires_scalef'\] is 0"),
        ("duplicate", {}, ValueError, "share a position with another spot"),
        ("garbage", {}, ValueError, "cannot be decoded as an image"),
        ("truncated", {}, ValueError, "cannot be decoded as an image"),
    ],
)
def test_bounds_and_damaged_inputs_leave_adata_unchanged(
    her2st, tmp_path, change, kwargs, error, match
):
    adata = her2st("C2")
    entry = adata.uns["spatial"]["C2"]
    if change == "scale0":
        entry["scalefactors"]["tissue_hires_scalef"] = 0.0
    elif change == "duplicate":
        adata.obsm["spatial"][5] = adata.obsm["spatial"][4]
    elif change in ("garbage", "truncated"):
        source = Path(entry["metadata"]["source_image_path"])
        damaged = tmp_path / source.name
        data = source.read_bytes()
        damaged.write_bytes(b"\x00" * 4096 if change == "garbage" else data[: len(data) // 3])
        entry["metadata"]["source_image_path"] = str(damaged)
        kwargs = {"img_key": "source_image_path"}
    before = snapshot(adata)
    with pytest.raises(error, match=match):
        stmix.pp.patches(adata, **{"size": 32, "progress": False, **kwargs})
    assert_unchanged(adata, before)
