"""The HEST-Benchmark probe: standardise, PCA to 256 components, ridge; its penalty tuned.

HEST's own code (``hest/bench/trainer.py``, ``train_test_reg``) overwrites its ``alpha`` argument
with ``100 / (n_features * n_genes)`` and fits without an intercept, so the penalty it reports
depends on the number of genes and is never tuned. Here the penalty is chosen on the validation
spots from a grid relative to the size of the principal components (``PENALTIES`` times their
mean eigenvalue), because it matters a lot: small penalties predict worse than the mean.

Standardisation, projection and ridge are all linear, so the fitted probe is one affine map of
the embedding, returned as the weights of a linear :class:`~stmix.nn.ExpressionHead`, whose
standardised input is held to the range of the training spots (``low``, ``high``; HEST does not
clip): with a few dozen training spots a feature nearly constant on them can be thousands of
standard deviations away on a new spot. The validation spots that choose the penalty are
clipped the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stmix.tl._standardise import standardise

#: Penalties tried, as multiples of the mean eigenvalue of the kept components.
PENALTIES = np.logspace(-3, 4, 15)
#: Components kept (HEST: 256), at most the number of training spots.
N_COMPONENTS = 256


@dataclass
class RidgeFit:
    """The probe as an affine map of the raw embedding, and how its penalty was chosen."""

    center: np.ndarray  # (d,) standardisation
    scale: np.ndarray  # (d,); inf for a feature constant over the training spots
    low: np.ndarray  # (d,) range of the standardised training embedding
    high: np.ndarray  # (d,)
    weight: np.ndarray  # (genes, d) on the standardised embedding
    bias: np.ndarray  # (genes,)
    alpha: float  # the penalty chosen
    n_components: int
    history: list[dict]  # one row per penalty tried: alpha, relative, val_mse
    components: np.ndarray  # (k, d) principal directions of the standardised training spots
    inverse: np.ndarray  # (k,) 1 / (eigenvalue + alpha): the spread's leverage
    sigma: np.ndarray  # (genes,) residual standard deviation on the training spots

    def uncertainty(self) -> dict[str, np.ndarray]:
        """What the probe's predictive spread needs (:mod:`stmix.tl._uncertainty`)."""
        return {"components": self.components, "inverse": self.inverse, "sigma": self.sigma}


def fit_ridge(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    n_components: int = N_COMPONENTS,
    penalties: np.ndarray = PENALTIES,
) -> RidgeFit:
    """Fit the probe for every penalty of the grid and keep the lowest validation MSE."""
    if len(x_train) < 2:
        raise ValueError(f"head='ridge' needs at least two training spots, not {len(x_train)}.")
    if len(x_val) == 0:
        raise ValueError(
            "head='ridge' chooses its penalty on the validation spots, and there are none: "
            "split with val > 0 (stmix.pp.split)."
        )
    x_train = x_train.astype(np.float64)
    seen = standardise(x_train)
    z = (x_train - seen.center) / seen.scale
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    k = int(min(n_components, len(s)))
    u, s, components = u[:, :k], s[:k], vt[:k]
    y_mean = y_train.mean(axis=0)
    uy = u.T @ (y_train - y_mean)  # (k, genes)
    z_val = seen.apply(x_val.astype(np.float64)) @ components.T  # scores (n_val, k)
    eigen = float(np.mean(s**2))
    history, best = [], None
    for relative in penalties:
        alpha = float(relative * eigen)
        beta = (s / (s**2 + alpha))[:, None] * uy  # ridge on the scores, (k, genes)
        mse = float(np.mean((z_val @ beta + y_mean - y_val) ** 2))
        history.append({"alpha": alpha, "relative": float(relative), "val_mse": mse})
        if best is None or mse < best[0]:
            best = (mse, alpha, beta)
    _, alpha, beta = best
    residual = y_train - (u * s) @ beta - y_mean
    return RidgeFit(
        center=seen.center.astype(np.float32),
        scale=seen.scale.astype(np.float32),
        low=seen.low.astype(np.float32),
        high=seen.high.astype(np.float32),
        weight=(components.T @ beta).T.astype(np.float32),
        bias=y_mean.astype(np.float32),
        alpha=alpha,
        n_components=k,
        history=history,
        components=components.astype(np.float32),
        inverse=(1 / (s**2 + alpha)).astype(np.float32),
        sigma=residual.std(axis=0).astype(np.float32),
    )
