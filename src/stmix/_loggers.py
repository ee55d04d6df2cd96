"""Holding other libraries' loggers and import-time warnings back while stmix calls them."""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator
from types import ModuleType


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


def quiet_import(name: str) -> ModuleType:
    """``import name`` without docrep's SyntaxWarnings about its own docstring templates.

    squidpy's import makes docrep warn "'n_jobs' is not a valid key!" (twice): noise about
    squidpy's docstrings that a user of stmix can do nothing about.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"'\w+' is not a valid key", SyntaxWarning)
        return importlib.import_module(name)
