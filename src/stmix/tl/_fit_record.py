"""What a fit leaves behind: the model's settings and the record in ``uns``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import stmix
from stmix import _history, _owner
from stmix._model_config import ModelConfig
from stmix._presets import TrainingConfig
from stmix.tl._model import Imputer, plain
from stmix.tl._training_data import TrainingData


@dataclass(frozen=True)
class Run:
    """How training went: one row per epoch, the best epoch, where and how long it ran."""

    history: list[dict]
    best_epoch: int
    hardware: dict  # accelerator, devices, seconds (and strategy, precision for a Trainer run)


def stain_of(data: TrainingData) -> dict:
    """The stain normalisation of the patches trained on (or embedded), to repeat on new ones."""
    params = data.store_params if data.use_rep is None else (data.embedding or {}).get("patches")
    stain = (params or {}).get("stain") or {}
    return plain({k: stain[k] for k in ("method", "target") if k in stain})


def model_config(
    data: TrainingData,
    config: TrainingConfig,
    augment: str,
    layer: str | None,
    head: str,
    best_epoch: int,
    params: dict,
) -> ModelConfig:
    """The settings a saved model needs to be rebuilt and to predict as it was trained."""
    common = {
        "genes": data.genes,
        "patch_size": data.patch_size,
        "spot_scale": data.spot_scale,
        **data.geometry,
        "dropout": config.dropout,
        "target": config.target,
        "augment": augment,
        "layer": layer,
        "best_epoch": best_epoch,
        "params": plain(params),
        "stmix_version": stmix.__version__,
        "stain": stain_of(data),
    }
    if data.use_rep is None:
        return ModelConfig.from_json(
            {
                "kind": "image",
                "backbone": config.backbone,
                "backbone_kwargs": plain(dict(params.get("backbone_kwargs") or {})),
                "scales": list(data.scales),
                **common,
            }
        )
    embedding = data.embedding or {}
    return ModelConfig.from_json(
        {
            "kind": "head",
            "head": head,
            "use_rep": data.use_rep,
            "in_features": int(data.inputs.shape[1]),
            "hidden": 256,
            "embedding": plain(embedding),
            "backbone": embedding.get("backbone", f"obsm[{data.use_rep!r}]"),
            "weights_source": embedding.get("weights", "unknown"),
            **common,
        }
    )


def record(model: Imputer, run: Run, writer: str) -> dict:
    """``uns[key_added]``: the settings, the history, the timing and what the model is."""
    history = _history.columns(run.history)
    hardware = run.hardware
    return {
        _owner.WRITER: writer,
        # older anndata cannot write None into uns: a setting that is None is left out there
        "params": {k: v for k, v in model.config.params.items() if v is not None},
        "history": history,
        "best_epoch": int(run.best_epoch),
        "genes": np.array(model.genes, dtype=object),
        "timing": {
            "seconds": float(hardware["seconds"]),
            "seconds_per_epoch": float(np.mean(history.get("seconds", [np.nan]))),
            "epochs_run": len(run.history),
            "device": hardware["accelerator"],
            "devices": int(hardware["devices"]),
        },
        "model": {
            "backbone": model.config.backbone,
            "weights": model.config.weights_source,
            "patch_size": model.patch_size,
            "target": model.config.target,
            "augment": model.config.augment,
        },
    }
