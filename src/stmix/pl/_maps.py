"""Measured and imputed expression maps over the tissue."""

from __future__ import annotations

import os
from collections.abc import Sequence

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from stmix import _anndata
from stmix._keys import SPATIAL, SPLIT
from stmix.pl import _spots
from stmix.pl._show import finish


def maps(
    adata: ad.AnnData,
    genes: str | Sequence[str],
    *,
    layers: Sequence[str | None] = (None, "stmix"),
    split: str | None = None,
    error: bool = False,
    img: bool = True,
    library_id: str | None = None,
    img_key: str | None = None,
    spot_size: float = 1.0,
    cmap: str = "viridis",
    error_cmap: str = "Reds",
    panel_size: float = 3.2,
    spatial_key: str = SPATIAL,
    split_key: str = SPLIT,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
) -> Figure | None:
    """Expression maps: one row per gene, one column per layer, over the H&E image.

    Each spot is drawn as a circle of its true diameter at its position. All panels of a gene
    share one colour scale (1st to 99th percentile over its layers), shown by the colour bar at
    the end of the row, so measured and imputed maps compare by eye.

    Parameters
    ----------
    adata
        Spots with ``obsm[spatial_key]`` and, for the image, ``uns["spatial"]``.
    genes
        Gene or genes, one row each.
    layers
        Columns: layers to draw; ``None`` is ``X`` (the measurements).
    split
        Outline the spots labelled ``split`` in ``obs[split_key]``, e.g. ``"train"`` for the
        spots the model learnt from.
    error
        Add a column with the absolute difference between the last and the first layer.
    img
        Draw the H&E image under the spots.
    library_id, img_key
        Which library and image of ``uns["spatial"]`` (default: the only one, ``hires``).
    spot_size
        Scale factor on the spot diameter.
    cmap, error_cmap
        Colour maps of the expression and of the error.
    panel_size
        Height of one panel in inches.
    spatial_key, split_key
        Keys of the coordinates and of the split.
    show
        Show the figure; ``False`` returns it instead.
    save
        Write the figure to this file (format from the suffix).

    Returns
    -------
    matplotlib.figure.Figure or None
        The figure when ``show=False``, else ``None``.
    """
    genes = [genes] if isinstance(genes, str) else list(genes)
    columns = _anndata.gene_indices(adata, genes)
    layers = list(layers)
    if not layers:
        raise ValueError("`layers` is empty.")
    if error and len(layers) < 2:
        raise ValueError("`error=True` needs two layers to compare.")
    values = [_layer_values(adata, layer, columns) for layer in layers]
    marked = None
    if split is not None:
        marked = _anndata.split_labels(adata, split_key).to_numpy() == split
    canvas = _spots.canvas(
        adata,
        library_id=library_id,
        img=img,
        img_key=img_key,
        spatial_key=spatial_key,
        spot_size=spot_size,
    )

    titles = [_title(layer) for layer in layers]
    n_rows, n_layers = len(genes), len(layers)
    left, right, bottom, top = canvas.extent
    aspect = (right - left) / max(bottom - top, 1e-9)
    # columns: the layers, their colour bar, then (error=True) the error and its colour bar
    ratios = [1.0] * n_layers + [0.06] + ([1.0, 0.06] if error else [])
    n_panels = n_layers + (1 if error else 0)
    fig, axes = plt.subplots(
        n_rows,
        len(ratios),
        figsize=(panel_size * aspect * n_panels + 1.0 * (1 + error), panel_size * n_rows),
        gridspec_kw={"width_ratios": ratios},
        squeeze=False,
        layout="constrained",
    )
    for row, gene in enumerate(genes):
        stacked = np.concatenate([v[:, row] for v in values])
        stacked = stacked[np.isfinite(stacked)]
        low, high = np.percentile(stacked, [1, 99]) if stacked.size else (0.0, 1.0)
        norm = Normalize(low, high if high > low else low + 1e-6)
        for col, v in enumerate(values):
            spots = _spots.draw(
                axes[row, col], canvas, v[:, row], cmap=cmap, norm=norm, marked=marked
            )
            axes[row, col].set_title(f"{gene} · {titles[col]}", fontsize=10)
        fig.colorbar(spots, cax=axes[row, n_layers], label=gene)
        if error:
            diff = np.abs(values[-1][:, row] - values[0][:, row])
            finite = diff[np.isfinite(diff)]
            top = np.percentile(finite, 99) if finite.size else 0.0
            err_norm = Normalize(0, top if top > 0 else 1.0)  # no error: a scale from 0
            ax = axes[row, n_layers + 1]
            err = _spots.draw(ax, canvas, diff, cmap=error_cmap, norm=err_norm, marked=marked)
            ax.set_title(f"{gene} · |{titles[-1]} − {titles[0]}|", fontsize=10)
            fig.colorbar(err, cax=axes[row, n_layers + 2], label="absolute error")
    if marked is not None:
        fig.suptitle(f"outlined: {split} spots", fontsize=9, x=0.01, ha="left")
    return finish(fig, show=show, save=save)


def _layer_values(adata: ad.AnnData, layer: str | None, columns: np.ndarray) -> np.ndarray:
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"adata.layers[{layer!r}] does not exist (layers: {list(adata.layers)}).")
    matrix = adata.X if layer is None else adata.layers[layer]
    matrix = matrix[:, columns]
    matrix = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
    return matrix.astype(np.float64)


def _title(layer: str | None) -> str:
    return "measured" if layer is None else layer
