"""SIGTERM handled as Ctrl+C is: a clear message, nothing half-written, exit status 143.

A batch scheduler, ``timeout`` or ``kill`` stops a run with SIGTERM. The command line turns it
into :class:`Terminated`, a ``KeyboardInterrupt``, so every step that cleans up after Ctrl+C
(temporary files, Lightning's teardown) cleans up after it too.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: The exit status of a process stopped by SIGTERM, as shells report it (128 + 15).
EXIT_STATUS = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _raise(signum, frame) -> None:
    raise Terminated("terminated (SIGTERM)")


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
