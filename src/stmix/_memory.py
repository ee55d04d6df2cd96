"""Checking that an array fits in memory before allocating it."""

from __future__ import annotations

import os
from pathlib import Path

#: Refuse an allocation above this share of the memory available now.
SHARE = 0.8


def available() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``, else free pages), or None."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def gib(nbytes: float) -> str:
    """``nbytes`` in GiB, for messages."""
    return f"{nbytes / 2**30:.1f} GiB"


def check_fits(nbytes: int, what: str, hint: str) -> None:
    """Raise ``MemoryError`` naming ``what`` and ``hint`` when ``nbytes`` would not fit."""
    free = available()
    if free is not None and nbytes > SHARE * free:
        raise MemoryError(
            f"{what} would take {gib(nbytes)}, more than the {gib(free)} of memory available: "
            f"{hint}"
        )
