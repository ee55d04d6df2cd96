"""The direction of imports that DESIGN.md fixes, read off the source."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "src" / "stmix"


def _imports(path) -> set[str]:
    """Modules a file imports when it is imported: module level, ``TYPE_CHECKING`` left out.

    An import inside a function (``pp.complete`` loads the transformer's trainer from ``tl``
    only when it runs) does not make the module depend on torch.
    """
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("nn", ("anndata", "scanpy", "squidpy", "stmix.pp", "stmix.tl", "stmix.pl", "stmix._")),
        ("pp", ("torch", "timm", "stmix.nn", "stmix.tl")),
        ("pl", ("torch", "timm", "stmix.nn", "stmix.tl")),
    ],
)
def test_import_direction(folder, forbidden):
    offenders = {
        f"{path.relative_to(PACKAGE)}: {module}"
        for path in (PACKAGE / folder).glob("*.py")
        for module in _imports(path)
        if any(module.startswith(f) for f in forbidden)
    }
    assert not offenders, sorted(offenders)
