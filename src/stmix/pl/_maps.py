"""Measured and imputed expression maps over the tissue."""

from __future__ import annotations

import os
from collections.abc import Sequence

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from stmix import _anndata, _validate
from stmix._keys import SPATIAL, SPLIT, SPLIT_CATEGORIES
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
    library_key: str | None = None,
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
    """Expression maps: one row per gene (and section), one column per layer, over the H&E image.

    Each spot is drawn as a circle of its true diameter at its position. All panels of a gene
    share one colour scale (1st to 99th percentile over its layers and sections), shown by the
    colour bar at the end of the row, so measured and imputed maps compare by eye.

    Parameters
    ----------
    adata
        Spots with ``obsm[spatial_key]`` and, for the image, ``uns["spatial"]``.
    genes
        Gene or genes, one row each.
    layers
        Columns: ``None`` is ``X`` (the measurements); a name is the predictions
        :func:`stmix.tl.impute` wrote under it (``obsm[name]``) or a layer. A section that was
        never measured draws only predictions: ``layers=("stmix",)``.
    split
        Outline the spots labelled ``split`` in ``obs[split_key]``, e.g. ``"train"`` for the
        spots the model learnt from.
    error
        Add a column with the absolute difference between the last and the first layer.
    img
        Draw the H&E image under the spots.
    library_id
        Draw only this section (with several sections), or choose the library of
        ``uns["spatial"]`` (with one section and several images).
    library_key
        Column of ``obs`` naming each spot's section (default ``"library_id"`` when
        ``uns["spatial"]`` holds several libraries and that column exists): one row per gene
        and section.
    img_key
        Which image of the library (default ``hires``).
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
    if not genes:
        raise ValueError("`genes` is empty.")
    layers = list(layers)
    if not layers:
        raise ValueError("`layers` is empty.")
    if error and len(layers) < 2:
        raise ValueError("`error=True` needs two layers to compare.")
    values = [_values(adata, layer, genes) for layer in layers]
    marked = None
    if split is not None:
        _validate.choice("split", split, SPLIT_CATEGORIES)
        marked = _anndata.split_labels(adata, split_key).to_numpy() == split
    key = _anndata.library_key(adata, library_key)
    if key is None:
        sections = [(library_id, np.arange(adata.n_obs))]
    else:
        by_name = _anndata.libraries(adata, key)
        if library_id is not None and str(library_id) not in by_name:
            raise KeyError(
                f"Section {library_id!r} is not in adata.obs[{key!r}] ({list(by_name)})."
            )
        chosen = [str(library_id)] if library_id is not None else list(by_name)
        sections = [(name, by_name[name]) for name in chosen]
    canvases = [
        _spots.canvas(
            adata[spots] if key is not None else adata,
            library_id=name,
            img=img,
            img_key=img_key,
            spatial_key=spatial_key,
            spot_size=spot_size,
        )
        for name, spots in sections
    ]

    titles = [_title(layer) for layer in layers]
    rows = [(g, s) for g in range(len(genes)) for s in range(len(sections))]
    n_layers = len(layers)
    left, right, bottom, top = canvases[0].extent
    aspect = (right - left) / max(bottom - top, 1e-9)
    # columns: the layers, their colour bar, then (error=True) the error and its colour bar
    ratios = [1.0] * n_layers + [0.06] + ([1.0, 0.06] if error else [])
    n_panels = n_layers + (1 if error else 0)
    fig, axes = plt.subplots(
        len(rows),
        len(ratios),
        figsize=(panel_size * aspect * n_panels + 1.0 * (1 + error), panel_size * len(rows)),
        gridspec_kw={"width_ratios": ratios},
        squeeze=False,
        layout="constrained",
    )
    norms = []
    for g in range(len(genes)):
        stacked = np.concatenate([v[:, g] for v in values])
        stacked = stacked[np.isfinite(stacked)]
        low, high = np.percentile(stacked, [1, 99]) if stacked.size else (0.0, 1.0)
        norms.append(Normalize(low, high if high > low else low + 1e-6))
    for row, (g, s) in enumerate(rows):
        gene, (name, spots) = genes[g], sections[s]
        where = f" · {name}" if key is not None else ""
        here = None if marked is None else marked[spots]
        for col, v in enumerate(values):
            drawn = _spots.draw(
                axes[row, col], canvases[s], v[spots, g], cmap=cmap, norm=norms[g], marked=here
            )
            axes[row, col].set_title(f"{gene} · {titles[col]}{where}", fontsize=10)
        fig.colorbar(drawn, cax=axes[row, n_layers], label=gene)
        if error:
            diff = np.abs(values[-1][spots, g] - values[0][spots, g])
            finite = diff[np.isfinite(diff)]
            top = np.percentile(finite, 99) if finite.size else 0.0
            err_norm = Normalize(0, top if top > 0 else 1.0)  # no error: a scale from 0
            ax = axes[row, n_layers + 1]
            err = _spots.draw(ax, canvases[s], diff, cmap=error_cmap, norm=err_norm, marked=here)
            ax.set_title(f"{gene} · |{titles[-1]} − {titles[0]}|{where}", fontsize=10)
            fig.colorbar(err, cax=axes[row, n_layers + 2], label="absolute error")
    if marked is not None:
        fig.suptitle(f"outlined: {split} spots", fontsize=9, x=0.01, ha="left")
    return finish(fig, show=show, save=save)


def _values(adata: ad.AnnData, source: str | None, genes: list[str]) -> np.ndarray:
    """(n_obs, genes) values of a column: ``X``, a layer, or predictions in ``obsm``."""
    if source is None or (source in adata.layers and not _is_predictions(adata, source)):
        columns = _anndata.gene_indices(adata, genes)
        matrix = adata.X if source is None else adata.layers[source]
        matrix = matrix[:, columns]
        matrix = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
        return matrix.astype(np.float64)
    frame = _anndata.predictions(adata, source)
    missing = [g for g in genes if g not in frame.columns]
    if missing:
        raise KeyError(f"The predictions under {source!r} have no gene {missing[:5]}.")
    return frame[genes].to_numpy(dtype=np.float64)


def _is_predictions(adata: ad.AnnData, source: str) -> bool:
    return source in adata.obsm and hasattr(adata.obsm[source], "columns")


def _title(layer: str | None) -> str:
    return "measured" if layer is None else layer
