"""The composite loss of SNR-ST-Mix."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from stmix.nn.constants import LOSS_WEIGHTS


def pearson_loss(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Minus the mean over genes of the Pearson correlation across the batch.

    ``pred`` and ``target`` are (batch, genes). ``eps`` keeps constant columns finite, exactly as
    in the public reference code (it is added under each square root and to the denominator).
    """
    p = pred - pred.mean(dim=0, keepdim=True)
    t = target - target.mean(dim=0, keepdim=True)
    numerator = (p * t).sum(dim=0)
    denominator = p.square().sum(dim=0).add(eps).sqrt() * t.square().sum(dim=0).add(eps).sqrt()
    return -(numerator / (denominator + eps)).mean()


def snr_loss(
    pred_mix: Tensor,
    pred_i: Tensor,
    pred_j: Tensor,
    y_i: Tensor,
    y_j: Tensor,
    lam: Tensor,
    edge_weight: Tensor,
    *,
    consistency: float = LOSS_WEIGHTS["consistency"],
    edge: float = LOSS_WEIGHTS["edge"],
    correlation: float = LOSS_WEIGHTS["correlation"],
) -> dict[str, Tensor]:
    r"""The composite SNR-ST-Mix loss, with each term unweighted beside the weighted total.

    With :math:`\tilde y = \lambda y_i + (1 - \lambda) y_j` and :math:`f` the network,

    .. math::

        \mathcal L = \underbrace{\mathrm{MSE}(f(\tilde x), \tilde y)}_{\text{vicinal}}
        + c\,\underbrace{\mathrm{MSE}(f(\tilde x), \lambda f(x_i) + (1-\lambda) f(x_j))}_
          {\text{consistency}}
        + e\,\underbrace{\overline{w_{ij}\,((f(x_i) - f(x_j)) - (y_i - y_j))^2}}_{\text{edge}}
        + r\,\underbrace{(-\overline{\rho_g}(f(\tilde x), \tilde y))}_{\text{correlation}}

    where the edge term averages over the batch and genes, and :math:`\rho_g` is the Pearson
    correlation of gene :math:`g` across the batch.

    Parameters
    ----------
    pred_mix, pred_i, pred_j
        Network outputs (batch, genes) for the mixed images and their two sources.
    y_i, y_j
        Targets of the two sources (batch, genes).
    lam
        Mixing ratio per sample, (batch,) or (batch, 1).
    edge_weight
        :math:`w_{ij}` per sample, (batch,) or (batch, 1): the paper takes the sampling
        probability :math:`P(j \mid i)` of eq. 6; the public code the kernel normalised over all
        training spots.
    consistency, edge, correlation
        Weights :math:`c, e, r` of the terms.

    Returns
    -------
    dict of str to torch.Tensor
        dict with ``total`` and the unweighted ``vicinal``, ``consistency``, ``edge``,
        ``correlation`` (scalar tensors).
    """
    lam = lam.reshape(-1, 1).to(pred_mix.dtype)
    edge_weight = edge_weight.reshape(-1, 1).to(pred_mix.dtype)
    y_mix = lam * y_i + (1 - lam) * y_j
    terms = {
        "vicinal": F.mse_loss(pred_mix, y_mix),
        "consistency": F.mse_loss(pred_mix, lam * pred_i + (1 - lam) * pred_j),
        "edge": (edge_weight * ((pred_i - pred_j) - (y_i - y_j)).square()).mean(),
        "correlation": pearson_loss(pred_mix, y_mix),
    }
    total = (
        terms["vicinal"]
        + consistency * terms["consistency"]
        + edge * terms["edge"]
        + correlation * terms["correlation"]
    )
    return {"total": total, **terms}


def mse_loss(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Plain MSE, the loss of the baselines without mixing, in the same dict form."""
    mse = F.mse_loss(pred, target)
    return {"total": mse, "mse": mse}


__all__ = ["LOSS_WEIGHTS", "mse_loss", "pearson_loss", "snr_loss"]
