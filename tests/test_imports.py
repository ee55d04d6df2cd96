"""``import stmix`` is fast: torch, Lightning and matplotlib load when a function needs them."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest


def _modules_after(code: str) -> set[str]:
    """The modules loaded by running ``code`` in a fresh interpreter."""
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


HEAVY = ("torch", "lightning", "timm", "matplotlib", "scanpy", "squidpy", "anndata")


def test_deferred_imports():
    loaded = _modules_after("import stmix")
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


@pytest.mark.parametrize(
    ("code", "absent"),
    [
        ("import stmix; stmix.pp", ("torch", "lightning", "timm", "matplotlib")),
        ("import stmix; stmix.pl", ("torch", "lightning", "timm")),
        ("import stmix; stmix.datasets", ("torch", "lightning", "timm", "matplotlib")),
        ("import stmix; stmix.io", ("torch", "lightning", "timm", "spatialdata")),
        ("import stmix.nn", ("torch",)),  # names load on first use
        ("from stmix.nn.constants import METHODS", ("torch",)),
        ("from stmix import cli; cli.build_parser()", ("torch", "lightning", "anndata")),
    ],
)
def test_each_namespace_loads_only_what_it_needs(code, absent):
    loaded = _modules_after(code)
    assert not {m for m in loaded if m.split(".")[0] in absent}, code


def test_submodules_and_names_resolve():
    import stmix

    assert set(dir(stmix)) >= {"pp", "tl", "pl", "nn", "datasets", "__version__"}
    assert callable(stmix.nn.snr_loss) and stmix.nn.METHODS[-1] == "snr"
    with pytest.raises(AttributeError, match="no attribute 'fit'"):
        stmix.fit  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'gene_metrics'"):
        stmix.nn.gene_metrics  # noqa: B018


def _seconds(args: list[str]) -> float:
    best = float("inf")
    for _ in range(3):  # the best of three: a busy machine should not fail the test
        start = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def test_import_and_help_are_fast():
    # measured here (2 cores): 0.06 s and 0.13 s; the targets are 1.5 s and 1 s
    assert _seconds([sys.executable, "-c", "import stmix"]) < 1.5
    assert _seconds([sys.executable, "-m", "stmix.cli", "--help"]) < 1.0
