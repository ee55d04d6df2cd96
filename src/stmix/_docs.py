"""Parameter descriptions that several functions share, written once (scanpy's ``_doc_params``).

A docstring names a shared description by a placeholder on its own line under the parameter's
name, ``{library_key}``; :func:`doc_params` writes the description there. Other braces in a
docstring (``uns[f"{key_added}_impute"]``) stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

Function = TypeVar("Function", bound=Callable)

#: name: description, each line as it reads under the parameter's name.
PARAMS = {
    "library_key": (
        "Column of ``obs`` naming each spot's section (squidpy's ``library_key``); default\n"
        '``"library_id"`` when ``uns["spatial"]`` holds several libraries and that column exists.'
    ),
    "spatial_key": "Key of the spot centres in ``obsm``.",
    "copy": "Return a new AnnData instead of writing into ``adata``.",
    "progress": "Show a progress bar.",
    "show": "Show the figure; ``False`` returns it instead.",
    "save": "Write the figure to this file (format from the suffix).",
}

_PLACEHOLDER = re.compile(r"^( *)\{(\w+)\}$", re.MULTILINE)


def doc_params(function: Function) -> Function:
    """``function`` with each ``{name}`` line of its docstring replaced by ``PARAMS[name]``."""

    def expand(match: re.Match) -> str:
        indent, name = match.groups()
        if name not in PARAMS:
            return match.group(0)
        return "\n".join(f"{indent}{line}" for line in PARAMS[name].splitlines())

    function.__doc__ = _PLACEHOLDER.sub(expand, function.__doc__ or "")
    return function
