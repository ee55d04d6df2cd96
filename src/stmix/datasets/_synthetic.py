"""A synthetic section whose expression is a known function of its image: a learnable task."""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pandas as pd

from stmix import _validate
from stmix._keys import SPATIAL

#: Optical density of haematoxylin (purple) and eosin (pink) per RGB channel (Ruifrok & Johnston).
HAEMATOXYLIN = np.array([0.65, 0.70, 0.29])
EOSIN = np.array([0.07, 0.99, 0.11])


def synthetic(
    n_spots: int = 256,
    *,
    n_genes: int = 8,
    spot_diameter: int = 24,
    noise: float = 0.05,
    seed: int = 0,
    gene_seed: int = 0,
    library_id: str = "synthetic",
) -> ad.AnnData:
    """A section of spots on a square grid whose expression the H&E-like image determines.

    Each spot has two latent factors in [0, 1]: a smooth function of its position plus a
    spot-specific part, so neighbouring spots are alike but not equal. The image shows each spot
    as a disc stained by the Beer-Lambert law with haematoxylin in proportion to the first factor
    and eosin to the second, with pixel noise as texture. Gene ``g``'s expression is
    ``softplus(a_g f_1 + b_g f_2 + c_g)`` plus Gaussian noise of sd ``noise``, clipped at 0: on the
    log scale of ``normalize_total`` + ``log1p`` data, and a known function of the patch. A small
    network learns it from 16-32 px patches on a CPU in seconds, so tests can tell training that
    works from training that does not; larger ``n_spots`` give sections for scale benchmarks.

    Parameters
    ----------
    n_spots
        Number of spots (the grid is the smallest square that holds them).
    n_genes
        Number of genes.
    spot_diameter
        Spot diameter in image pixels; spots lie 1.5 diameters apart.
    noise
        Standard deviation of the expression noise that the image does not explain.
    seed
        Seed of the factors, the image noise and the expression noise.
    gene_seed
        Seed of the gene coefficients: sections made with the same ``gene_seed`` (and different
        ``seed``) are sections of one tissue, whose genes follow the image the same way.
    library_id
        Key of the image in ``uns["spatial"]``.

    Returns
    -------
    anndata.AnnData
        ``X`` (float32 expression), ``obsm["spatial"]`` (spot centres in image pixels),
        ``obs["array_row"]``, ``obs["array_col"]``, ``obs["factor_1"]``, ``obs["factor_2"]``,
        ``uns["spatial"][library_id]`` (``images["hires"]`` and ``scalefactors`` with
        ``tissue_hires_scalef`` 1 and ``spot_diameter_fullres``) and ``uns["synthetic"]`` (the gene
        coefficients).
    """
    n_spots = _validate.integer("n_spots", n_spots, minimum=2)
    n_genes = _validate.integer("n_genes", n_genes)
    spot_diameter = _validate.integer("spot_diameter", spot_diameter, minimum=4)
    noise = _validate.number("noise", noise, at_least=0)
    seed = _validate.integer("seed", seed, minimum=0)
    gene_seed = _validate.integer("gene_seed", gene_seed, minimum=0)
    rng = np.random.default_rng(seed)

    side = math.ceil(math.sqrt(n_spots))
    row, col = np.divmod(np.arange(n_spots), side)
    pitch = 1.5 * spot_diameter
    margin = spot_diameter
    x = margin + col * pitch + pitch / 2
    y = margin + row * pitch + pitch / 2
    u, v = col / max(side - 1, 1), row / max(side - 1, 1)
    smooth_1 = 0.5 + 0.3 * np.sin(2 * np.pi * u) * np.cos(np.pi * v)
    smooth_2 = 0.5 + 0.3 * np.cos(2 * np.pi * (u + v) / 1.5)
    factor_1 = np.clip(smooth_1 + 0.15 * rng.standard_normal(n_spots), 0, 1)
    factor_2 = np.clip(smooth_2 + 0.15 * rng.standard_normal(n_spots), 0, 1)

    size = int(np.ceil(2 * margin + side * pitch))
    image = _stain(size, x, y, spot_diameter, factor_1, factor_2, rng)

    genes = np.random.default_rng([gene_seed, 0x6E6E])
    a = genes.normal(0, 2.0, n_genes)
    b = genes.normal(0, 2.0, n_genes)
    c = genes.normal(0.5, 0.5, n_genes)
    linear = factor_1[:, None] * a + factor_2[:, None] * b + c
    expression = np.logaddexp(0, linear) + noise * rng.standard_normal((n_spots, n_genes))
    expression = np.clip(expression, 0, None).astype(np.float32)

    names = [f"spot_{i}" for i in range(n_spots)]
    adata = ad.AnnData(
        expression,
        obs=pd.DataFrame(
            {"array_row": row, "array_col": col, "factor_1": factor_1, "factor_2": factor_2},
            index=names,
        ),
        var=pd.DataFrame(index=[f"gene_{g}" for g in range(n_genes)]),
    )
    adata.obsm[SPATIAL] = np.c_[x, y].astype(np.float64)
    adata.uns[SPATIAL] = {
        library_id: {
            "images": {"hires": image},
            "scalefactors": {
                "tissue_hires_scalef": 1.0,
                "spot_diameter_fullres": float(spot_diameter),
            },
            "metadata": {
                "source": "stmix.datasets.synthetic",
                "seed": seed,
                "gene_seed": gene_seed,
            },
        }
    }
    adata.uns["synthetic"] = {"a": a, "b": b, "c": c, "noise": noise}
    return adata


def _stain(size, x, y, diameter, factor_1, factor_2, rng) -> np.ndarray:
    """A white slide with one stained disc per spot (Beer-Lambert), plus pixel noise."""
    density = np.zeros((size, size, 3))
    radius = 0.6 * diameter
    half = int(np.ceil(radius))
    offsets = np.arange(-half, half + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    disc = dx**2 + dy**2 <= radius**2
    for cx, cy, h, e in zip(x, y, factor_1, factor_2, strict=True):
        rows = round(cy) + dy[disc]
        cols = round(cx) + dx[disc]
        density[rows, cols] = 1.6 * h * HAEMATOXYLIN + 1.2 * e * EOSIN
    light = 255.0 * np.exp(-density)
    light += rng.normal(0, 6.0, light.shape)
    return np.clip(np.round(light), 0, 255).astype(np.uint8)
