"""The HER2-positive breast cancer Spatial Transcriptomics sections of Andersson et al. (2021)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse

from stmix import _options
from stmix._image import large_images, read_image
from stmix._keys import SPATIAL

logger = logging.getLogger(__name__)

#: Upstream repository (GitHub) whose ``data/`` folder the loader reads, and the ref it pins.
UPSTREAM_REPO = "almaan/her2st"
UPSTREAM_REF = "master"

#: The 36 sections of the upstream repository (patients A-H).
SECTIONS: tuple[str, ...] = tuple(
    f"{patient}{i}"
    for patient, n in zip("ABCDEFGH", (6, 6, 6, 6, 3, 3, 3, 3), strict=True)
    for i in range(1, n + 1)
)

#: Image file names that cannot be derived from the section name. Sections not listed here
#: are looked up in the upstream folder listing when downloading.
IMAGE_FILES: dict[str, str] = {
    "B4": "BT10737_D2_HE.jpg",
    "C2": "5714_HE_BT_C2.jpg",
    "C3": "5714_HE_BT_D1.jpg",
    "C4": "5714_HE_BT_D2.jpg",
    "C5": "5714_HE_BT_E1.jpg",
    "C6": "5714_HE_BT_E2.jpg",
}

#: Centre-to-centre distance of the Spatial Transcriptomics array and the spot diameter, in µm.
ARRAY_PITCH_UM = 200.0
SPOT_DIAMETER_UM = 100.0
#: Largest side of the ``hires`` and ``lowres`` images, as Space Ranger writes them.
HIRES_SIDE = 2000
LOWRES_SIDE = 600


def counts_path(section: str) -> str:
    """Path of a section's counts table relative to the upstream ``data/`` folder."""
    return f"ST-cnts/{section}.tsv.gz"


def spots_path(section: str) -> str:
    """Path of a section's spot table relative to the upstream ``data/`` folder."""
    return f"ST-spotfiles/{section}_selection.tsv"


def image_dir(section: str) -> str:
    """Folder of a section's H&E image relative to the upstream ``data/`` folder."""
    return f"ST-imgs/{section[0]}/{section}"


def upstream_url(relative: str, *, repo: str = UPSTREAM_REPO, ref: str = UPSTREAM_REF) -> str:
    """Download address of a file under the upstream ``data/`` folder.

    ``github.com/<repo>/raw/<ref>/...`` serves plain files and redirects to the LFS store for
    large ones, so the same address works for counts, spot tables and images.
    """
    return f"https://github.com/{repo}/raw/{ref}/data/{relative}"


def listing_url(relative: str, *, repo: str = UPSTREAM_REPO, ref: str = UPSTREAM_REF) -> str:
    """GitHub API address that lists a folder under the upstream ``data/`` folder."""
    return f"https://api.github.com/repos/{repo}/contents/data/{relative}?ref={ref}"


def her2st(
    section: str | Sequence[str] = "C2", root: str | os.PathLike | None = None
) -> ad.AnnData:
    """Load HER2ST sections as AnnData in the scanpy Visium layout.

    The spots kept are those both in the counts table and selected under tissue in the spot
    table, in the order of the counts table. Several sections come as one AnnData in squidpy's
    layout (:func:`stmix.pp.concat`): ``obs["library_id"]`` names each spot's section,
    ``uns["spatial"]`` holds one entry per section, the genes are those all sections share.

    Parameters
    ----------
    section
        Section name, ``"A1"`` to ``"H3"`` (see :data:`SECTIONS`), or a list of them.
    root
        Folder laid out as the upstream ``data/`` folder (``ST-cnts/``, ``ST-spotfiles/``,
        ``ST-imgs/<patient>/<section>/``). ``None`` uses ``$STMIX_DATA_DIR/her2st`` when the
        variable is set, else downloads the section's three files from the upstream repository
        into the user cache (``pooch.os_cache("stmix")``) on first use.

    Returns
    -------
    anndata.AnnData
        AnnData with

        - ``X``: raw UMI counts, CSR float32, spots × genes;
        - ``obs``: ``array_row`` / ``array_col`` (the upstream array ``y`` / ``x``), ``in_tissue``,
          ``section``;
        - ``obsm["spatial"]``: spot centres in full-resolution image pixels (x, y);
        - ``uns["spatial"][section]``: ``images["hires"]`` / ``images["lowres"]`` (uint8, longest
          side 2000 / 600 px), ``scalefactors`` (``tissue_hires_scalef``,
          ``tissue_lowres_scalef``, ``spot_diameter_fullres``, ``array_pitch_fullres``) and
          ``metadata["source_image_path"]``, the full-resolution JPEG.

    Examples
    --------
    >>> import stmix
    >>> adata = stmix.datasets.her2st("C3")  # doctest: +SKIP
    >>> cohort = stmix.datasets.her2st(["C2", "C3", "C4"])  # doctest: +SKIP
    """
    if not isinstance(section, str):
        from stmix.pp._concat import concat

        names = [_check_section(s) for s in section]
        if not names:
            raise ValueError("`section` is an empty list.")
        if len(set(names)) < len(names):
            raise ValueError(f"`section` lists a section more than once: {names}.")
        return concat({name: her2st(name, root) for name in names})
    section = _check_section(section)
    files = _locate(section, root)

    counts = pd.read_csv(files["counts"], sep="\t", index_col=0)
    spots = pd.read_csv(files["spots"], sep="\t")
    missing = {"x", "y", "new_x", "new_y", "pixel_x", "pixel_y", "selected"} - set(spots.columns)
    if missing:
        raise ValueError(f"Spot table {files['spots']} lacks the columns {sorted(missing)}.")
    spots.index = spots["x"].astype(int).astype(str) + "x" + spots["y"].astype(int).astype(str)
    pitch = _array_pitch(spots)
    selected = spots.index[spots["selected"].astype(int) == 1]
    keep = counts.index[counts.index.isin(selected)]
    if len(keep) == 0:
        raise ValueError(f"No spot of {files['counts']} is selected in {files['spots']}.")
    counts, spots = counts.loc[keep], spots.loc[keep]

    obs = pd.DataFrame(
        {
            "array_row": spots["y"].astype(int).to_numpy(),
            "array_col": spots["x"].astype(int).to_numpy(),
            "in_tissue": 1,
            "section": pd.Categorical([section] * len(keep)),
        },
        index=pd.Index(keep.astype(str), name=None),
    )
    var = pd.DataFrame(index=pd.Index(counts.columns.astype(str), name=None))
    adata = ad.AnnData(
        X=sparse.csr_matrix(counts.to_numpy(dtype=np.float32)),
        obs=obs,
        var=var,
    )
    adata.var_names_make_unique()
    adata.obsm[SPATIAL] = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    adata.uns[SPATIAL] = {section: _image_entry(files["image"], pitch)}
    return adata


def _check_section(section: str) -> str:
    section = str(section).upper()
    if section not in SECTIONS:
        raise ValueError(f"Unknown HER2ST section {section!r}. Sections are {', '.join(SECTIONS)}.")
    return section


def _locate(section: str, root: str | os.PathLike | None) -> dict[str, Path]:
    from_env = root is None and bool(os.environ.get("STMIX_DATA_DIR"))
    if from_env:
        root = Path(os.environ["STMIX_DATA_DIR"]) / "her2st"
    if root is None:
        return _download(section)
    root = Path(root).expanduser()
    counts, spots = root / counts_path(section), root / spots_path(section)
    images = sorted((root / image_dir(section)).glob("*.jpg"))
    for path in (counts, spots):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist. {_root_hint(root, section, from_env)}")
    if not images:
        raise FileNotFoundError(f"No H&E image (*.jpg) in {root / image_dir(section)}.")
    return {"counts": counts, "spots": spots, "image": images[0]}


def _root_hint(root: Path, section: str, from_env: bool) -> str:
    """What to change when the data folder is one level off, in the words of how it was given."""
    layout = "laid out as the upstream data folder (ST-cnts/, ST-spotfiles/, ST-imgs/)"
    if from_env:
        env = root.parent
        if (env / counts_path(section)).is_file():
            return (
                f"STMIX_DATA_DIR={env} holds the HER2ST files itself; set it to {env.parent}, "
                f"the folder that holds her2st/."
            )
        return f"STMIX_DATA_DIR must name the folder that holds her2st/ {layout}."
    if (root / "her2st" / counts_path(section)).is_file():
        return f"{root} holds her2st/: use {_options.arg('root', str(root / 'her2st'))}."
    if (root.parent / counts_path(section)).is_file():
        return f"Use {_options.arg('root', str(root.parent))}, the folder {layout}."
    return (
        f"The root folder must be {layout}; {_options.unset('root')} to download section {section}."
    )


def _download(section: str) -> dict[str, Path]:
    """The section's files from upstream, or a ConnectionError naming the local options."""
    try:
        return _fetch(section)
    except (OSError, ValueError) as error:  # requests' and urllib's errors are OSErrors
        if isinstance(error, FileNotFoundError):
            raise
        reason = type(error).__name__
        raise ConnectionError(
            f"Section {section} could not be downloaded from {upstream_url('')} ({reason}; "
            f"offline?). Point STMIX_DATA_DIR at a folder that holds her2st/ in the upstream "
            f"layout (data/ST-cnts, data/ST-spotfiles, data/ST-imgs), or pass root= (--root in "
            f"the command)."
        ) from None


def _fetch(section: str) -> dict[str, Path]:
    import pooch

    cache = Path(pooch.os_cache("stmix")) / "her2st"
    downloader = pooch.HTTPDownloader(timeout=60, progressbar=True)
    image_name = IMAGE_FILES.get(section) or _list_image(section)
    relative = {
        "counts": counts_path(section),
        "spots": spots_path(section),
        "image": f"{image_dir(section)}/{image_name}",
    }
    files = {}
    for key, rel in relative.items():
        target = cache / rel
        logger.info("Fetching %s", upstream_url(rel))
        files[key] = Path(
            pooch.retrieve(
                upstream_url(rel),
                known_hash=None,
                fname=target.name,
                path=target.parent,
                downloader=downloader,
            )
        )
    return files


def _list_image(section: str) -> str:
    import urllib.request

    url = listing_url(image_dir(section))
    with urllib.request.urlopen(url, timeout=30) as response:
        entries = json.load(response)
    names = [e["name"] for e in entries if str(e.get("name", "")).lower().endswith(".jpg")]
    if not names:
        raise FileNotFoundError(f"No H&E image listed at {url}.")
    return sorted(names)[0]


def _array_pitch(spots: pd.DataFrame) -> float:
    """Pixels per array step, from a least-squares fit of pixel on adjusted array coordinates."""
    slopes = []
    for array, pixel in (("new_x", "pixel_x"), ("new_y", "pixel_y")):
        a = spots[array].to_numpy(dtype=float)
        p = spots[pixel].to_numpy(dtype=float)
        if np.ptp(a) == 0:
            continue
        slopes.append(abs(np.polyfit(a, p, 1)[0]))
    if not slopes:
        raise ValueError("Cannot derive the array pitch: all spots share one array position.")
    return float(np.mean(slopes))


def _image_entry(path: Path, pitch: float) -> dict:
    with large_images(), Image.open(path) as image:
        full_w, full_h = image.size
    # decoding at 1/4 size (JPEG DCT scaling) is much faster than a full decode and a resize
    reduced, _ = read_image(path, reduce=4)
    hires_scale = HIRES_SIDE / max(full_w, full_h)
    hires = reduced.resize(
        (round(full_w * hires_scale), round(full_h * hires_scale)), Image.Resampling.LANCZOS
    )
    lowres_scale = LOWRES_SIDE / max(full_w, full_h)
    lowres = hires.resize(
        (round(full_w * lowres_scale), round(full_h * lowres_scale)), Image.Resampling.LANCZOS
    )
    spot = pitch * SPOT_DIAMETER_UM / ARRAY_PITCH_UM
    return {
        "images": {"hires": np.asarray(hires), "lowres": np.asarray(lowres)},
        "scalefactors": {
            "tissue_hires_scalef": float(hires_scale),
            "tissue_lowres_scalef": float(lowres_scale),
            "spot_diameter_fullres": float(spot),
            "array_pitch_fullres": float(pitch),
        },
        "metadata": {
            "source_image_path": str(Path(path).resolve()),
            "full_resolution_shape": [int(full_h), int(full_w)],
            "platform": "Spatial Transcriptomics (1k array)",
            # the array pitch is 200 µm: pixels per pitch give the pixel size
            "microns_per_pixel": float(ARRAY_PITCH_UM / pitch),
        },
    }
