"""Holding other libraries' loggers back while stmix calls them."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def held_back(*names: str, level: int = logging.WARNING) -> Iterator[None]:
    """The loggers ``names`` at ``level`` or above for the block, their levels restored after."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(max(log.level, level))
    try:
        yield
    finally:
        for log, previous in zip(loggers, levels, strict=True):
            log.setLevel(previous)
