"""Checks of scalar options, one wording everywhere.

Every public function checks its options through these before it reads or writes anything, so
``n_neighbors=0``, ``epochs=True`` or ``lr=nan`` get the same kind of message wherever they are
passed. Each check returns the value in its canonical Python type.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from stmix import _options
from stmix.errors import InputTypeError


def integer(name: str, value: Any, *, minimum: int = 1, none: bool = False) -> int | None:
    """``value`` as an ``int`` of at least ``minimum`` (``None`` passes when ``none``).

    A value that is not an integer (a float, a string, a bool) is a ``TypeError``; an integer
    below ``minimum`` a ``ValueError``.
    """
    if value is None and none:
        return None
    what = {0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer of at least {minimum}"
    )
    message = f"{_options.name(name)} must be {what}{' or None' if none else ''}, not {value!r}."
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(message)
    if value < minimum:
        raise ValueError(message)
    return int(value)


def number(
    name: str,
    value: Any,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    none: bool = False,
) -> float | None:
    """``value`` as a finite ``float`` within the given bounds (``None`` passes when ``none``)."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"{_options.name(name)} must be a number, not {value!r}.")
    value = float(value)
    bounds = []
    if above is not None:
        bounds.append((value > above, f"above {above:g}"))
    if at_least is not None:
        bounds.append((value >= at_least, f"at least {at_least:g}"))
    if below is not None:
        bounds.append((value < below, f"below {below:g}"))
    if at_most is not None:
        bounds.append((value <= at_most, f"at most {at_most:g}"))
    wanted = " and ".join(text for _, text in bounds)
    if not math.isfinite(value) or not all(ok for ok, _ in bounds):
        raise ValueError(
            f"{_options.name(name)} must be a finite number{' ' + wanted if wanted else ''}, "
            f"not {value!r}."
        )
    return value


def choice(name: str, value: Any, options: Collection[Any]) -> Any:
    """``value`` if it is one of ``options``."""
    if value not in options:
        raise ValueError(f"{_options.name(name)} must be one of {list(options)}, not {value!r}.")
    return value


def non_empty(name: str, values: Sequence[Any]) -> list[Any]:
    """``values`` as a list, refused when empty."""
    values = list(values)
    if not values:
        raise ValueError(f"`{name}` is empty.")
    return values
