"""Which augmentation works on these data? Every method, the same budget, the same splits."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import anndata as ad
import pandas as pd

from stmix import _anndata, _options, _validate
from stmix.nn.constants import METHODS
from stmix.pp._neighbors import neighbors
from stmix.pp._split import split
from stmix.tl._baseline import training_mean
from stmix.tl._evaluate import evaluate
from stmix.tl._fit import fit
from stmix.tl._impute import impute

logger = logging.getLogger(__name__)

#: Predicting the training mean everywhere: the score any model must beat.
MEAN = "mean"


def compare(
    adata: ad.AnnData,
    methods: Sequence[str] | Mapping[str, Mapping] = (MEAN, *METHODS),
    *,
    seeds: Sequence[int] = (0,),
    train: float = 0.3,
    val: float = 0.2,
    layer: str | None = None,
    genes: Sequence[str] | str | None = None,
    neighbors_kwargs: Mapping | None = None,
    progress: bool = False,
    **fit_kwargs,
) -> pd.DataFrame:
    """Train and test every method on the same splits with the same budget.

    For each seed, the spots are split ``train`` / ``val`` / rest with that seed
    (:func:`stmix.pp.split`); each method trains (:func:`stmix.tl.fit` with ``seed``) with early
    stopping on the validation spots and is scored on the test spots. ``adata`` is not changed:
    each run works on a copy.

    Parameters
    ----------
    adata
        Spots with patches (:func:`stmix.pp.patches`) and log-normalised expression.
    methods
        ``augment`` values, plus ``"mean"`` (the training mean predicted everywhere). Or a
        mapping from a row name to ``{"augment": ..., "neighbors": {...}, "fit": {...}}`` for
        variants, e.g. ``{"snr-expression": {"augment": "snr", "neighbors": {"basis":
        "expression"}}}``.
    seeds
        One split and one training seed per value.
    train, val
        Split fractions.
    layer, genes
        Expression to learn and genes to predict, as in :func:`stmix.tl.fit`.
    neighbors_kwargs
        Arguments of :func:`stmix.pp.neighbors` for ``snr`` and ``knn`` (default: its defaults).
    progress
        Progress bars of the fits.
    **fit_kwargs
        Every other :func:`stmix.tl.fit` argument (backbone, epochs, lr, ...), the same for all.

    Returns
    -------
    pandas.DataFrame
        One row per method and seed: ``method``, ``seed``, test ``mse``, ``mae``, ``pcc``,
        ``best_epoch``, ``epochs_run``, ``seconds_per_epoch``, ``seconds``.
    """
    specs = _specs(methods)
    if "seed" in fit_kwargs:
        raise ValueError(
            f"Pass seeds with {_options.arg('seeds')}; each run uses its seed for split and fit."
        )
    _anndata.genes(adata, genes)  # checked before the first run
    seeds = [_validate.integer("seeds", s, minimum=0) for s in _validate.non_empty("seeds", seeds)]
    rows = []
    for seed in seeds:
        base = split(adata, train, val, seed=seed, copy=True)
        for name, spec in specs.items():
            started = time.perf_counter()
            row = {"method": name, "seed": int(seed)}
            if spec["augment"] == MEAN:
                row.update(training_mean(base, layer=layer, genes=genes))
                row.update(best_epoch=0, epochs_run=0, seconds_per_epoch=0.0)
            else:
                run = base.copy()
                if spec["augment"] in ("snr", "knn"):
                    neighbors(
                        run,
                        layer=layer,
                        **{**(neighbors_kwargs or {}), **spec.get("neighbors", {})},
                    )
                model = fit(
                    run,
                    layer=layer,
                    genes=genes,
                    augment=spec["augment"],
                    seed=seed,
                    progress=progress,
                    **{**fit_kwargs, **spec.get("fit", {})},
                )
                impute(run, model, progress=False)
                evaluate(run, layer=layer)
                row.update({k: run.uns["stmix_metrics"][k] for k in ("mse", "mae", "pcc")})
                timing = run.uns["stmix"]["timing"]
                row.update(
                    best_epoch=int(run.uns["stmix"]["best_epoch"]),
                    epochs_run=int(timing["epochs_run"]),
                    seconds_per_epoch=float(timing["seconds_per_epoch"]),
                )
            row["seconds"] = time.perf_counter() - started
            logger.info("%s seed %d: test MSE %.4f, PCC %.4f", name, seed, row["mse"], row["pcc"])
            rows.append(row)
    return pd.DataFrame(rows)


def _specs(methods) -> dict[str, dict]:
    if isinstance(methods, Mapping):
        specs = {str(name): dict(spec) for name, spec in methods.items()}
    else:
        specs = {str(m): {"augment": str(m)} for m in methods}
    for name, spec in specs.items():
        augment = spec.get("augment")
        if augment not in (MEAN, *METHODS):
            raise ValueError(
                f"Method {name!r}: {_options.name('augment')} must be one of "
                f"{[MEAN, *METHODS]}, not {augment!r}."
            )
    if not specs:
        raise ValueError(f"{_options.name('methods')} is empty.")
    return specs
