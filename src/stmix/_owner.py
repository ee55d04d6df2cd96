"""Which AnnData keys a call may write: its own, never a user's or another step's.

Every stmix step keeps a record in ``uns`` (its parameters) that names the step in ``"writer"``.
Before it computes anything, a step checks each key it is about to write: a key that does not
exist yet is free; one that exists belongs to the step only if its record says the step wrote
it (an earlier run, which is then replaced, and the log says so). Anything else, such as
``uns["spatial"]``, a ``counts`` layer or the records scanpy and squidpy keep (``uns["pca"]``,
``uns["neighbors"]``, ``uns["leiden"]``: dicts of ``params`` with no ``"writer"``), is an error
that names the key and ``key_added=``.

Key names are checked here too, before anything is written: a name must be a non-empty string
without ``/`` (h5ad would store it as a nested group) and not ``_index`` (h5ad's own column).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import anndata as ad

from stmix import _options

logger = logging.getLogger("stmix")

WRITER = "writer"


def _exists(adata: ad.AnnData, container: str, key: str) -> bool:
    if container in ("obs", "var"):
        return key in getattr(adata, container).columns
    return key in getattr(adata, container)


def claim(adata: ad.AnnData, writer: str, record: str, targets: Iterable[tuple[str, str]]) -> None:
    """Refuse to replace keys that ``writer`` does not own (see the module docstring).

    Parameters
    ----------
    adata
        The AnnData about to be written.
    writer
        The step, e.g. ``"stmix.pp.patches"``.
    record
        The ``uns`` key of the step's record.
    targets
        ``(container, key)`` pairs the step writes; containers are ``obs``, ``var``, ``obsm``,
        ``obsp``, ``layers`` and ``uns``.
    """
    targets = list(targets)
    for _, key in [*targets, ("uns", record)]:
        check_name(key)
    existing = [(c, k) for c, k in targets if _exists(adata, c, k)]
    if not existing:
        return
    found = adata.uns.get(record)
    owned = isinstance(found, dict) and found.get(WRITER) == writer
    if not owned:
        container, key = existing[0]
        by = found.get(WRITER) if isinstance(found, dict) else None
        who = f"by {by}" if by else f"by {writer}"
        raise ValueError(
            f"adata.{container}[{key!r}] exists and was not written {who}: {writer} does not "
            f"replace it. Choose another name with {_options.arg('key_added')}."
        )
    logger.info(
        "Replacing %s of an earlier %s.",
        ", ".join(f"{c}[{k!r}]" for c, k in existing),
        writer,
    )


#: Names that h5ad files keep for themselves.
RESERVED = ("_index",)


def check_name(key: object, parameter: str = "key_added") -> None:
    """A key that survives ``write_h5ad`` / ``read_h5ad`` as itself, else a ValueError."""
    if not isinstance(key, str) or not key:
        raise ValueError(
            f"`{parameter}` must be a non-empty string, not {key!r}: an empty key cannot be "
            f"written to or read from an .h5ad file."
        )
    if "/" in key:
        raise ValueError(
            f"`{parameter}={key!r}` holds '/', which h5ad stores as a nested group (it would "
            f"come back as a dict); use '_' or '-' instead."
        )
    if key in RESERVED:
        raise ValueError(f"`{parameter}={key!r}` is a name h5ad files reserve; choose another.")


def mark(record: dict, writer: str) -> dict:
    """``record`` with the writer named (for :func:`claim`)."""
    return {WRITER: writer, **record}
