"""One interface for every training-time augmentation, so the training loop never branches.

An :class:`Augmentation` turns a batch of anchor indices into a :class:`Step`: the images to
run through the network in one call, and the loss of the network's output. The mixing methods
stack ``[x_mix; x_i; x_j]`` and score with :func:`~stmix.nn.snr_loss`; the others stack only
``x_i`` and score with plain MSE (the paper's baselines).

A training step is then, whatever the method::

    step = augmentation(anchors, patches, targets)
    losses = step.loss(model(step.inputs))
    losses["total"].backward()
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import Tensor

from stmix import _options
from stmix.nn.constants import LOSS_WEIGHTS, METHODS, MIXING
from stmix.nn.geometric import flip_rotate_crop
from stmix.nn.images import to_input
from stmix.nn.loss import mse_loss, snr_loss
from stmix.nn.mixing import cutmix, mix_pixels, sample_lambda
from stmix.nn.sampling import PartnerSampler
from stmix.nn.stain import hed_jitter

__all__ = ["METHODS", "MIXING", "Augmentation", "Mix", "Plain", "Step"]


@dataclass
class Step:
    """The network inputs of one training step and how to score the outputs.

    For the mixing methods, ``partners`` are the indices of the spots mixed into the anchors,
    ``lam`` the share of each anchor in its mixed sample and ``edge_weight`` the pair's weight
    in the loss.
    """

    inputs: Tensor
    y_i: Tensor
    y_j: Tensor | None = None
    lam: Tensor | None = None
    edge_weight: Tensor | None = None
    partners: Tensor | None = None
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(LOSS_WEIGHTS))

    def loss(self, pred: Tensor) -> dict[str, Tensor]:
        """The loss terms (``total`` first) for the network output on :attr:`inputs`."""
        pred = pred.float()
        if self.y_j is None:
            return mse_loss(pred, self.y_i)
        pred_mix, pred_i, pred_j = pred.chunk(3)
        return snr_loss(
            pred_mix,
            pred_i,
            pred_j,
            self.y_i,
            self.y_j,
            self.lam,
            self.edge_weight,
            **self.loss_weights,
        )


class Augmentation(ABC):
    """Makes the :class:`Step` of a batch of anchors."""

    @abstractmethod
    def __call__(self, anchors: Tensor, patches: Tensor, targets: Tensor) -> Step:
        """The step of a batch of anchors.

        Anchors index ``patches`` (uint8 images N × H × W × 3, or float vectors N × d) and
        ``targets`` (N × genes).
        """

    def to(self, device: torch.device | str) -> Augmentation:
        """Return the augmentation with its tables on ``device``."""
        return self


def _stained(x: Tensor, strength: float) -> Tensor:
    """Images re-stained with HED jitter of ``strength`` (:func:`~stmix.nn.stain.hed_jitter`)."""
    if strength == 0:
        return x
    if x.ndim != 4:
        raise ValueError(
            "Stain augmentation re-colours images; these inputs are vectors (an embedding): "
            "normalise the stain of the patches before embedding them instead."
        )
    return hed_jitter(x, strength)


class Plain(Augmentation):
    """No mixing: the images as they are (``none``) or flipped/rotated/cropped (``basic``).

    ``stain`` re-colours each image with HED jitter of that strength first.
    """

    def __init__(self, *, geometric: bool = False, stain: float = 0.0):
        self.geometric = geometric
        self.stain = float(stain)

    def __call__(self, anchors: Tensor, patches: Tensor, targets: Tensor) -> Step:
        """The anchors' inputs (images augmented with ``geometric``) and their targets."""
        return self.make(patches[anchors], targets[anchors])

    def make(self, x_i: Tensor, y_i: Tensor) -> Step:
        """The step of inputs already read (uint8 patches or vectors) and their targets."""
        x = _stained(to_input(x_i), self.stain)
        if self.geometric:
            if x.ndim != 4:
                raise ValueError(
                    f"{_options.arg('augment', 'basic')} flips and crops images; these inputs are "
                    "vectors."
                )
            x = flip_rotate_crop(x)
        return Step(inputs=x, y_i=y_i)


class Mix(Augmentation):
    """Mix each anchor with a partner drawn by ``sampler``, pixel-wise or box-wise (CutMix).

    Parameters
    ----------
    sampler
        Draws the partners and their edge weights.
    alpha
        The mixing ratio is drawn from Beta(alpha, alpha).
    boxes
        CutMix: paste a box of the partner instead of blending pixels; the targets are mixed by
        the area kept.
    loss_weights
        Weights of the consistency, edge and correlation terms of the loss.
    stain
        Re-colour each anchor and partner with HED jitter of this strength before mixing (the
        mixed image blends the two re-coloured images).
    """

    def __init__(
        self,
        sampler: PartnerSampler,
        *,
        alpha: float = 1.0,
        boxes: bool = False,
        loss_weights: dict[str, float] | None = None,
        stain: float = 0.0,
    ):
        self.sampler = sampler
        self.alpha = float(alpha)
        self.boxes = boxes
        self.loss_weights = {**LOSS_WEIGHTS, **(loss_weights or {})}
        self.stain = float(stain)

    def __call__(self, anchors: Tensor, patches: Tensor, targets: Tensor) -> Step:
        """Draw partners and ratios, mix, and stack ``[x_mix; x_i; x_j]``."""
        partners, edge_weight = self.sampler(anchors)
        return self.make(
            patches[anchors],
            patches[partners],
            targets[anchors],
            targets[partners],
            edge_weight,
            partners,
        )

    def make(
        self,
        x_i: Tensor,
        x_j: Tensor,
        y_i: Tensor,
        y_j: Tensor,
        edge_weight: Tensor,
        partners: Tensor | None = None,
    ) -> Step:
        """Mix pairs already drawn and read (e.g. by DataLoader workers from a patch store)."""
        x_i, x_j = _stained(to_input(x_i), self.stain), _stained(to_input(x_j), self.stain)
        if self.boxes and x_i.ndim != 4:
            raise ValueError(
                f"{_options.arg('augment', 'cutmix')} pastes boxes of images; these inputs are "
                "vectors."
            )
        lam = sample_lambda(len(x_i), self.alpha, x_i.device)
        x_mix, lam = (cutmix if self.boxes else mix_pixels)(x_i, x_j, lam)
        return Step(
            inputs=torch.cat([x_mix, x_i, x_j]),
            y_i=y_i,
            y_j=y_j,
            lam=lam,
            edge_weight=edge_weight,
            partners=partners,
            loss_weights=self.loss_weights,
        )

    def to(self, device: torch.device | str) -> Mix:
        """Return the augmentation with its sampler's tables on ``device``."""
        return Mix(
            self.sampler.to(device),
            alpha=self.alpha,
            boxes=self.boxes,
            loss_weights=self.loss_weights,
            stain=self.stain,
        )
