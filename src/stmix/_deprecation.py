"""Renamed parameters: the old name still works for one version, with a FutureWarning.

The pattern is scanpy's ``renamed_arg``: the decorated function is called with the new name,
and a call with the old one warns and is forwarded.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from stmix.errors import InputTypeError

F = TypeVar("F", bound=Callable[..., Any])


class _Unset:
    """The default of a parameter kept only for its old name: tells "not passed" from ``None``."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


def renamed(old: str, new: str, *, since: str = "0.2") -> Callable[[F], F]:
    """Accept ``old=`` for ``new=`` with a FutureWarning; both at once is an error."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if old in kwargs:
                if new in kwargs:
                    raise InputTypeError(
                        f"{function.__name__}() got both `{old}` and its new name `{new}`; "
                        f"pass only `{new}`."
                    )
                warn(f"{function.__name__}({old}=...)", f"{new}=...", since, stacklevel=3)
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def warn(old: str, new: str, since: str = "0.2", *, stacklevel: int = 3) -> None:
    """The one wording of a renamed parameter's warning."""
    warnings.warn(
        f"{old} is renamed {new} in stmix {since}; the old name will be removed in the next "
        f"version.",
        FutureWarning,
        stacklevel=stacklevel,
    )
