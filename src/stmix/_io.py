"""Writing files so that nothing is lost: a temporary name, then one rename.

Every file stmix writes (``.h5ad``, model folders, CSV, PNG) is written under a temporary name
beside its target and renamed into place only when complete. A write that fails (a full disk,
an interrupt, an error while serialising) leaves the previous file as it was and no partial
file behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def _temporary(target: Path) -> Path:
    """A hidden name beside ``target`` that keeps its suffix (formats are read from it)."""
    return target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.tmp{target.suffix}")


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write; it replaces ``target`` when the block ends without error.

    The parent folder is created when missing. ``target`` must not be a folder.
    """
    target = Path(target)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder; give a file name to write to.")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(target)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder to fill; it replaces the folder ``target`` when the block succeeds.

    The previous folder (if any) is moved aside first and deleted only once the new one is in
    place; if the swap fails, the previous folder is put back.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(target)
    temporary.mkdir()
    try:
        yield temporary
        previous = None
        if target.exists():
            previous = _temporary(target)
            os.replace(target, previous)
        try:
            os.replace(temporary, target)
        except OSError:
            if previous is not None:
                os.replace(previous, target)
            raise
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def write_h5ad(adata, path: str | os.PathLike, compression: str | None = None) -> None:
    """``adata.write_h5ad(path)`` whole or not at all: a failed write keeps the old file.

    Errors are one ``OSError`` that says which (h5py reports a full disk as ``OSError`` or
    ``RuntimeError``).
    """
    existed = Path(path).exists()
    try:
        with atomic_file(path) as temporary:
            adata.write_h5ad(temporary, compression=compression)
    except (OSError, RuntimeError) as error:
        reason = str(error).split("error message = ")[-1].strip("')") or type(error).__name__
        kept = "the existing file is as it was" if existed else "no partial file was left"
        raise OSError(f"could not write {path} ({reason}); {kept}.") from error
