"""The errors stmix raises for what a user passed, or for what the machine cannot reach.

Each is also the built-in error it refines (``except KeyError`` still catches a missing key).
Together with :class:`ValueError` (a value out of range or of the wrong kind, raised with the
words a user needs), they are what the ``stmix`` command prints in one line; any other exception
is a bug, printed with the hint to rerun with ``--debug``.
"""

from __future__ import annotations


class StmixError(Exception):
    """Base of the errors stmix raises on purpose, with what to do in the message."""


class MissingKeyError(StmixError, KeyError):
    """A key, column, layer, section or gene that the input does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InputTypeError(StmixError, TypeError):
    """An argument of the wrong type (a list where a dict goes, a string where a number goes)."""


class UnavailableError(StmixError, RuntimeError):
    """Something the call needs that this machine cannot reach (weights offline, a gated model)."""
