"""How error messages name the option a user should change.

From Python a message reads ``name=``; on the command line, ``--flag``.

A message that tells the user what to pass names the parameter through :func:`arg` or
:func:`name`. From Python they read ``weights=`` and ``accelerator='cpu'``; inside
:func:`spelled` (the command line sets it for the running command, from its parser) the same
messages read ``--weights`` and ``--accelerator cpu``. A parameter the command has no option for
keeps its Python spelling, and :func:`offers` lets a message leave out advice that the caller
cannot follow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

#: The running command's options by the parameter each feeds; None outside the command line.
_FLAGS: ContextVar[Mapping[str, str] | None] = ContextVar("stmix_flags", default=None)
_UNSET = object()


def _flag(parameter: str) -> str | None:
    flags = _FLAGS.get()
    return None if flags is None else flags.get(parameter)


def arg(parameter: str, value: Any = _UNSET) -> str:
    """``parameter`` as the caller passes it.

    `` `layer=` `` or ``layer='counts'`` in Python, `` `--layer` `` or ``--layer counts`` on the
    command line.
    """
    flag = _flag(parameter)
    if value is _UNSET:
        return f"`{flag}`" if flag else f"`{parameter}=`"
    return f"{flag} {value}" if flag else f"{parameter}={value!r}"


def name(parameter: str) -> str:
    """``parameter`` named in a sentence: `` `size` `` in Python, `` `--size` `` from the CLI."""
    return f"`{_flag(parameter) or parameter}`"


def unset(parameter: str) -> str:
    """How to leave ``parameter`` at its default.

    ``pass root=None`` in Python, ``leave out --root`` on the command line.
    """
    flag = _flag(parameter)
    return f"leave out {flag}" if flag else f"pass {parameter}=None"


def from_python() -> bool:
    """Whether the caller is Python code.

    Python can pass objects (arrays, masks, images) that no command-line option takes.
    """
    return _FLAGS.get() is None


def offers(parameter: str) -> bool:
    """Whether the caller can pass ``parameter``.

    Always from Python; on the command line when the command has an option for it.
    """
    return from_python() or _flag(parameter) is not None


@contextlib.contextmanager
def spelled(flags: Mapping[str, str]) -> Iterator[None]:
    """Within this block, messages name each parameter in ``flags`` by its option."""
    token = _FLAGS.set(dict(flags))
    try:
        yield
    finally:
        _FLAGS.reset(token)
