"""Predicting slides nobody measured: one ``.h5ad`` per slide, resumable, spread over devices.

A slide is tiled with pseudo-spots of the model's training size (:func:`stmix.pp.tile`), its
patches are cut region by region (:func:`stmix.pp.patches`) and every gene of the model is
predicted (:func:`stmix.tl.predict`). Over a cohort, Lightning's ``Trainer.predict`` hands the
slides out: each process (a GPU, or a CPU process with ``accelerator="cpu", devices=2``) takes
its own slides, with no slide twice, and writes each output under a temporary name, renamed when
complete. A slide whose output exists is skipped, so an interrupted cohort continues where it
stopped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import lightning.pytorch as L
import pandas as pd
import torch
from torch.utils.data import DataLoader

from stmix import _image, _io, _options
from stmix.errors import InputTypeError
from stmix.tl._model import Imputer, load
from stmix.tl._quiet import quiet
from stmix.tl._trainer import check_trainer_kwargs, trainer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Geometry:
    """How pseudo-spots are laid over a slide: sizes in µm when ``mpp`` is set, else pixels."""

    spot_diameter: float
    spacing: float
    mpp: float | None
    grid: str = "hexagonal"
    tissue: str = "auto"


def geometry(
    model: Imputer,
    slide: str | os.PathLike,
    *,
    spot_diameter: float | None = None,
    spacing: float | None = None,
    mpp: float | None = None,
    grid: str = "hexagonal",
    tissue: str = "auto",
) -> Geometry:
    """The pseudo-spots of ``slide`` as the model saw its training spots.

    The pixel size is ``mpp``, else what the slide records; with it, sizes are in µm and the
    spot diameter defaults to the model's ``spot_diameter_um``. Without a pixel size (a JPEG),
    the slide is taken as scanned like the training slides: the diameter in pixels. ``spacing``
    defaults to the diameter (spots touching).
    """
    if mpp is None:
        mpp = _image.recorded_mpp(Path(slide))
    config = model.config
    if spot_diameter is None:
        if mpp is not None and config.spot_diameter_um:
            spot_diameter = float(config.spot_diameter_um)  # the same physical size
        elif config.spot_diameter_px:
            spot_diameter, mpp = float(config.spot_diameter_px), None  # scanned like training
        else:
            raise ValueError(
                f"The model does not record its spot diameter: pass "
                f"{_options.arg('spot_diameter')} (pixels, or µm with {_options.arg('mpp')})."
            )
    spacing = spot_diameter if spacing is None else spacing
    return Geometry(float(spot_diameter), float(spacing), mpp, grid, tissue)


def predict_slide(
    slide: str | os.PathLike,
    model: Imputer,
    where: Geometry,
    *,
    interval: float | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> ad.AnnData:
    """The model's genes predicted at pseudo-spots over one slide's tissue.

    Returns :func:`stmix.tl.predict`'s AnnData (with ``interval``: the spread, the bounds and
    the flag of tissue unlike the training data) with only the ``lowres`` image kept (enough to
    draw the maps on), the size an ``.h5ad`` of a slide should have.
    """
    import stmix

    if model.kind == "head" and not model.patch_size:
        raise ValueError(
            "The model's embedding was not made by stmix.tl.embed: it cannot be made here."
        )
    grid = stmix.pp.tile(
        slide,
        spot_diameter=where.spot_diameter,
        spacing=where.spacing,
        mpp=where.mpp,
        grid=where.grid,
        tissue=where.tissue,
    )
    stmix.pp.patches(
        grid, size=model.patch_size, spot_scale=model.config.spot_scale, progress=progress
    )
    if model.config.stain:  # coloured as the training patches were
        stain = model.config.stain
        stmix.pp.normalize_stain(
            grid, target=stain["target"], method=stain.get("method", "reinhard")
        )
    pred = stmix.tl.predict(grid, model, interval=interval, device=device, progress=progress)
    for entry in (pred.uns.get("spatial") or {}).values():
        images = entry.get("images") or {}
        if "lowres" in images:
            entry["images"] = {"lowres": images["lowres"]}
    return pred


class SlidePredictor(L.LightningModule):
    """Each step predicts one slide and writes its ``.h5ad``: Lightning spreads the slides."""

    def __init__(self, model: Imputer, jobs: list, interval: float | None, progress: bool):
        super().__init__()
        self.network = model.module  # registered: Lightning moves it to the process's device
        self.model = model
        self.jobs = jobs
        self.interval = interval
        self.progress = progress

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> dict[str, Any]:
        slide, out, where = self.jobs[int(batch[0])]
        try:
            pred = predict_slide(
                slide, self.model, where, interval=self.interval, device=self.device, progress=False
            )
            _io.write_h5ad(pred, out, compression="gzip")
        except Exception as error:  # the same error, naming the slide
            error.args = (f"{Path(slide).name}: {error}", *error.args[1:])
            raise
        logger.info("%s: %d pseudo-spots predicted into %s", slide, pred.n_obs, out)
        if self.progress:
            print(f"{Path(slide).name}: {pred.n_obs} pseudo-spots -> {out}", flush=True)
        return {"slide": slide, "spots": pred.n_obs}


def predict_slides(
    slides: Sequence[str | os.PathLike],
    model: Imputer | str | os.PathLike,
    out: str | os.PathLike,
    *,
    spot_diameter: float | None = None,
    spacing: float | None = None,
    mpp: float | None = None,
    grid: str = "hexagonal",
    tissue: str = "auto",
    interval: float | None = None,
    overwrite: bool = False,
    accelerator: str = "auto",
    devices: int | str | list[int] = 1,
    progress: bool = True,
    **trainer_kwargs: Any,
) -> pd.DataFrame:
    """Predict every slide of a cohort into ``out/<slide name>.h5ad``.

    One output per slide, as :func:`stmix.tl.predict` makes it (``X`` the model's genes at
    pseudo-spots over the tissue, the ``lowres`` image), written under a temporary name and
    renamed when complete. Slides whose output exists are skipped (``overwrite=False``): run the
    same call again after an interruption and it continues. Lightning's ``Trainer.predict``
    spreads the slides over ``devices`` (several GPUs, or CPU processes), each slide to one
    process.

    Parameters
    ----------
    slides
        Image files: whole-slide images (SVS, NDPI, TIFF) or JPEG / PNG.
    model
        A trained :class:`~stmix.tl.Imputer`, or the folder of a saved one.
    out
        The folder that receives one ``.h5ad`` per slide, named after the slide's file.
    spot_diameter, spacing, mpp, grid, tissue
        The pseudo-spots, as :func:`stmix.pp.tile` takes them; by default the model's training
        spots, in µm when the slide records its pixel size (see :func:`geometry`).
    interval
        Also write the spread, bounds at this level and the flag of tissue unlike the training
        data (:func:`stmix.tl.impute`'s ``interval``).
    overwrite
        Predict slides whose output exists again.
    accelerator, devices
        Where to predict, as Lightning takes them (``devices=4`` for four GPUs, or
        ``accelerator="cpu", devices=2`` for two CPU processes).
    progress
        Print a line per finished slide.
    **trainer_kwargs
        Other arguments of ``lightning.pytorch.Trainer`` (``strategy``, ``num_nodes``).

    Returns
    -------
    pandas.DataFrame
        One row per slide: ``slide``, ``output``, ``status`` (``"predicted"`` or ``"skipped"``).
    """
    if isinstance(slides, (str, os.PathLike)):
        raise InputTypeError("`slides` must be a list of files; pass [slide] for one.")
    trainer_kwargs = check_trainer_kwargs(trainer_kwargs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file: pass the folder that receives one .h5ad per slide.")
    model = model if isinstance(model, Imputer) else load(model, device="cpu")
    from stmix.tl import _intervals

    interval = _intervals.check(model, interval)
    outputs = _outputs(slides, out)
    jobs, rows = [], []
    for slide, target in outputs.items():
        done = target.exists() and not overwrite
        rows.append({"slide": slide, "output": str(target), "status": "skipped" if done else ""})
        if not done:
            _image.image_size(Path(slide))  # every slide readable before the first one starts
            where = geometry(
                model,
                slide,
                spot_diameter=spot_diameter,
                spacing=spacing,
                mpp=mpp,
                grid=grid,
                tissue=tissue,
            )
            jobs.append((slide, str(target), where))
    if jobs:
        out.mkdir(parents=True, exist_ok=True)
        predictor = SlidePredictor(model, jobs, interval, progress)
        _run(predictor, len(jobs), accelerator, devices, trainer_kwargs)
    for row in rows:
        row["status"] = row["status"] or "predicted"
    return pd.DataFrame(rows)


def _outputs(slides: Sequence[str | os.PathLike], out: Path) -> dict[str, Path]:
    """Each slide's output file, named after the slide; two slides of one name are refused."""
    outputs: dict[str, Path] = {}
    for slide in slides:
        target = out / f"{Path(slide).stem.removesuffix('.ome')}.h5ad"
        clash = [s for s, t in outputs.items() if t == target]
        if clash:
            raise ValueError(
                f"{slide} and {clash[0]} would both be written to {target}: give the slides "
                f"distinct file names."
            )
        if not Path(slide).is_file():
            raise FileNotFoundError(f"Slide {slide} does not exist.")
        outputs[str(slide)] = target
    return outputs


def _run(module: SlidePredictor, n: int, accelerator, devices, trainer_kwargs: dict) -> None:
    loader = DataLoader(torch.arange(n), batch_size=1, shuffle=False)
    trainer_kwargs.setdefault("logger", False)
    with quiet():
        lightning = trainer(
            accelerator=accelerator,
            devices=devices,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            **trainer_kwargs,
        )
        lightning.predict(module, dataloaders=loader, return_predictions=False)
