"""Measured and imputed expression maps over the tissue."""

from __future__ import annotations

import os
from collections.abc import Sequence

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from stmix import _anndata, _deprecation, _predictions, _validate
from stmix._deprecation import UNSET
from stmix._docs import doc_params
from stmix._keys import PREDICTIONS, SPATIAL, SPLIT, SPLIT_CATEGORIES, predicted_key
from stmix.errors import MissingKeyError
from stmix.pl import _spots
from stmix.pl._show import finish


@doc_params
def maps(
    adata: ad.AnnData,
    genes: str | Sequence[str],
    *,
    key: str | Sequence[str] = PREDICTIONS,
    layer: str | None = None,
    measured: bool | None = None,
    split: str | None = None,
    error: bool = False,
    trust: bool = False,
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
    layers: Sequence[str | None] = UNSET,
) -> Figure | None:
    """Expression maps: one row per gene (and section), measured and predicted, over the H&E image.

    Each spot is drawn as a circle of its true diameter at its position. All panels of a gene
    share one colour scale (1st to 99th percentile over its layers and sections), shown by the
    colour bar at the end of the row, so measured and imputed maps compare by eye.

    Parameters
    ----------
    adata
        Spots with ``obsm[spatial_key]`` and, for the image, ``uns["spatial"]``.
    genes
        Gene or genes, one row each.
    key
        Key (or keys, one column each) of the predictions: ``layers[key]`` of
        :func:`stmix.tl.impute`, or ``X`` of an AnnData from :func:`stmix.tl.predict`.
    layer
        Layer of the measured expression; ``None`` uses ``X``.
    measured
        Draw the measured expression as the first column. ``None``: when ``adata`` measures
        the genes (not for a slide from :func:`stmix.tl.predict`, whose ``X`` is predictions).
    split
        Outline the spots labelled ``split`` in ``obs[split_key]``, e.g. ``"train"`` for the
        spots the model learnt from.
    error
        Add a column with the absolute difference between the (last) predictions and the
        measurements.
    trust
        Add two columns from ``tl.impute(..., interval=)`` (or ``tl.predict``): the spread of
        the (last) predictions, ``layers[f"{key}_std"]``, and the flag of tissue unlike the
        training data, ``obs[f"{key}_ood"]`` (0-1; the same map in every row).
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
        {show}
    save
        {save}
    layers
        Deprecated: the columns as names (``None`` for ``X``); use ``key``, ``layer`` and
        ``measured``.

    Returns
    -------
    matplotlib.figure.Figure or None
        The figure when ``show=False``, else ``None``.
    """
    genes = [genes] if isinstance(genes, str) else list(genes)
    if not genes:
        raise ValueError("`genes` is empty.")
    columns = _columns(adata, genes, key, layer, measured, layers)
    if error and (len(columns) < 2 or columns[0][0] != "measured"):
        raise ValueError(
            "`error=True` needs the measured expression and predictions to compare "
            "(`measured=True` and a `key`)."
        )
    values = [_values(adata, kind, name, genes) for kind, name in columns]
    marked = None
    if split is not None:
        _validate.choice("split", split, SPLIT_CATEGORIES)
        marked = _anndata.split_labels(adata, split_key).to_numpy() == split
    key = _anndata.library_key(adata, library_key)
    sections = _sections(adata, key, library_id)
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

    titles = [_title(kind, name) for kind, name in columns]
    extras = _extras(adata, genes, columns, values, titles, error, trust, error_cmap)
    rows = [(g, s) for g in range(len(genes)) for s in range(len(sections))]
    n_layers = len(columns)
    left, right, bottom, top = canvases[0].extent
    aspect = (right - left) / max(bottom - top, 1e-9)
    # columns: the layers, their colour bar, then each extra panel and its colour bar
    ratios = [1.0] * n_layers + [0.06] + [1.0, 0.06] * len(extras)
    n_panels = n_layers + len(extras)
    fig, axes = plt.subplots(
        len(rows),
        len(ratios),
        figsize=(panel_size * aspect * n_panels + 1.0 * (1 + len(extras)), panel_size * len(rows)),
        gridspec_kw={"width_ratios": ratios},
        squeeze=False,
        layout="constrained",
    )
    norms = [_shared_norm([v[:, g] for v in values]) for g in range(len(genes))]
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
        for i, (title, panel, panel_cmap, label, norm) in enumerate(extras):
            shown = panel[spots, g] if panel.ndim == 2 else panel[spots]
            ax = axes[row, n_layers + 1 + 2 * i]
            drawn = _spots.draw(
                ax, canvases[s], shown, cmap=panel_cmap, norm=norm or _upper(shown), marked=here
            )
            ax.set_title(f"{gene} · {title}{where}", fontsize=10)
            fig.colorbar(drawn, cax=axes[row, n_layers + 2 + 2 * i], label=label)
    if marked is not None:
        fig.suptitle(f"outlined: {split} spots", fontsize=9, x=0.01, ha="left")
    return finish(fig, show=show, save=save)


def _extras(adata, genes, columns, values, titles, error, trust, error_cmap) -> list[tuple]:
    """Panels after the layers: ``(title, values, cmap, colour-bar label, norm or None)``."""
    extras = []
    if error:
        extras.append(
            (
                f"|{titles[-1]} − {titles[0]}|",
                np.abs(values[-1] - values[0]),
                error_cmap,
                "absolute error",
                None,
            )
        )
    if trust:
        name = columns[-1][1]
        spread, flag = f"{name}_std", f"{name}_ood"
        if spread not in adata.layers or flag not in adata.obs:
            raise MissingKeyError(
                f"`trust=True` draws layers[{spread!r}] and obs[{flag!r}]: predict with "
                f"stmix.tl.impute(adata, model, interval=0.9) first."
            )
        extras.append((f"spread ({name})", _layer(adata, spread, genes), "magma", "spread", None))
        extras.append(
            (
                "unlike training",
                adata.obs[flag].to_numpy(dtype=np.float64),
                "RdYlGn_r",
                "0: like the validation spots · 1: unlike any",
                Normalize(0, 1),
            )
        )
    return extras


def _layer(adata: ad.AnnData, name: str, genes: list[str]) -> np.ndarray:
    matrix = adata.layers[name][:, _anndata.gene_indices(adata, genes)]
    matrix = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
    return matrix.astype(np.float64)


def _upper(values: np.ndarray) -> Normalize:
    """A scale from 0 to the 99th percentile (0 to 1 when there is nothing above 0)."""
    finite = values[np.isfinite(values)]
    top = np.percentile(finite, 99) if finite.size else 0.0
    return Normalize(0, top if top > 0 else 1.0)


def _columns(adata, genes, key, layer, measured, layers) -> list[tuple[str, str | None]]:
    """The panels of a row: ``("measured", layer)`` first when drawn, then ``("key", name)``."""
    if layers is not UNSET:
        _deprecation.warn("maps(layers=...)", "key=..., layer=..., measured=...", stacklevel=4)
        columns = [
            ("key", name)
            if name is not None and _predictions.exists(adata, name)
            else ("measured", name)
            for name in layers
        ]
        if not columns:
            raise ValueError("`layers` is empty.")
        return columns
    keys = [key] if isinstance(key, str) else list(key)
    if not keys:
        raise ValueError("`key` is empty: name the predictions to draw.")
    if measured is None:
        in_var = all(g in adata.var_names for g in genes)
        measured = in_var and not any(_predictions.in_x(adata, k) for k in keys)
    return ([("measured", layer)] if measured else []) + [("key", k) for k in keys]


def _values(adata: ad.AnnData, kind: str, name: str | None, genes: list[str]) -> np.ndarray:
    """(n_obs, genes) values of a column: measured (``X`` or a layer) or predictions.

    A layer of predictions that a user made (not marked in ``var``) is drawn as it is, NaN
    where it predicts nothing.
    """
    made_by_user = name in adata.layers and predicted_key(name) not in adata.var.columns
    if kind == "measured" or made_by_user:
        if name is not None and name not in adata.layers:
            raise MissingKeyError(
                f"adata.layers[{name!r}] is missing (layers: {list(adata.layers)})."
            )
        columns = _anndata.gene_indices(adata, genes)
        matrix = adata.X if name is None else adata.layers[name]
        matrix = matrix[:, columns]
        matrix = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
        return matrix.astype(np.float64)
    frame = _predictions.read(adata, name)
    missing = [g for g in genes if g not in frame.columns]
    if missing:
        raise MissingKeyError(
            f"The predictions under {name!r} have no gene {missing[:5]} (they hold "
            f"{frame.shape[1]} genes, e.g. {list(frame.columns[:3])})."
        )
    return frame[genes].to_numpy(dtype=np.float64)


def _sections(adata: ad.AnnData, key: str | None, library_id) -> list[tuple]:
    """``(name, spot indices)`` of each section drawn: all of them, or ``library_id``."""
    if key is None:
        return [(library_id, np.arange(adata.n_obs))]
    by_name = _anndata.libraries(adata, key)
    if library_id is not None and str(library_id) not in by_name:
        raise MissingKeyError(
            f"Section {library_id!r} is not in adata.obs[{key!r}] ({list(by_name)})."
        )
    chosen = [str(library_id)] if library_id is not None else list(by_name)
    return [(name, by_name[name]) for name in chosen]


def _shared_norm(columns: list[np.ndarray]) -> Normalize:
    """One colour scale for a gene's panels: the 1st to 99th percentile of all their values."""
    stacked = np.concatenate(columns)
    stacked = stacked[np.isfinite(stacked)]
    low, high = np.percentile(stacked, [1, 99]) if stacked.size else (0.0, 1.0)
    return Normalize(low, high if high > low else low + 1e-6)


def _title(kind: str, name: str | None) -> str:
    if kind == "measured":
        return "measured" if name is None else f"measured ({name})"
    return name
