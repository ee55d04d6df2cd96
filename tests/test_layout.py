"""The direction of imports that DESIGN.md fixes, read off the source.

Every import counts, also one inside a function (a deferred import still ties the layers
together); only imports for type checkers are left out.
"""

from __future__ import annotations

import ast

import pytest

from tests.support import REPO

PACKAGE = REPO / "src" / "stmix"

#: The one allowed exception: the deprecated name ``stmix.pp.complete`` forwards to its new home
#: ``stmix.tl.complete`` when someone still uses it.
EXEMPT = {("pp/__init__.py", "stmix.tl")}


def _imports(path) -> set[str]:
    """Modules a file imports anywhere, ``if TYPE_CHECKING:`` blocks left out."""
    tree = ast.parse(path.read_text())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


TORCH = ("torch", "timm", "lightning", "pytorch_lightning")


@pytest.mark.parametrize(
    ("files", "forbidden", "allowed"),
    [
        (
            "nn/*.py",
            (
                "anndata",
                "scanpy",
                "squidpy",
                "lightning",
                "stmix.pp",
                "stmix.tl",
                "stmix.pl",
                "stmix._",
            ),
            ("stmix._options",),  # how messages name options: the standard library only
        ),
        (
            "pp/*.py",
            (*TORCH, "stmix.nn", "stmix.tl", "stmix.pl", "matplotlib"),
            ("stmix.nn.constants",),
        ),
        ("pl/*.py", (*TORCH, "stmix.nn", "stmix.tl", "stmix.pp"), ()),
        ("datasets/*.py", (*TORCH, "stmix.nn", "stmix.tl", "stmix.pl", "matplotlib"), ()),
        ("io/*.py", (*TORCH, "stmix.nn", "stmix.tl", "stmix.pl", "matplotlib"), ()),
        (
            "_*.py",
            (*TORCH, "matplotlib", "stmix.pp", "stmix.tl", "stmix.pl", "stmix.nn"),
            ("stmix.nn.constants",),
        ),
    ],
)
def test_import_direction(files, forbidden, allowed):
    offenders = {
        f"{path.relative_to(PACKAGE)}: {module}"
        for path in PACKAGE.glob(files)
        for module in _imports(path)
        if any(module.startswith(f) for f in forbidden)
        and module not in allowed
        and (str(path.relative_to(PACKAGE)), module) not in EXEMPT
    }
    assert not offenders, sorted(offenders)


def test_every_module_is_checked():
    checked = {"nn", "pp", "pl", "datasets", "io"}
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders - checked == {"tl"}  # tl is where AnnData meets tensors: anything goes


def test_the_layout_page_names_every_module_once():
    """docs/layout.md, "Where things are", matches the tree: no module missing, none invented."""
    import re

    page = (REPO / "docs" / "layout.md").read_text()
    listed = re.findall(r"^- `([\w/]+\.py)`: \S", page, re.MULTILINE)
    tree = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))
    assert sorted(listed) == tree


def test_test_modules_have_unique_names():
    """pytest imports test files by their base name (the test folders are not packages)."""
    names = [path.name for path in (REPO / "tests").rglob("test_*.py")]
    assert sorted(name for name in set(names) if names.count(name) > 1) == []


def _body_lines(function: ast.FunctionDef) -> int:
    """Lines of a function's body, its docstring left out."""
    body = function.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:] or body
    return body[-1].end_lineno - body[0].lineno + 1


def test_functions_fit_on_a_screen():
    """No function's body is over 80 lines; ``tl.fit``, the centre, stays under 60."""
    lengths = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lengths[f"{path.relative_to(PACKAGE)}:{node.name}"] = _body_lines(node)
    assert {name: n for name, n in lengths.items() if n > 80} == {}
    assert lengths["tl/_fit.py:fit"] < 60
