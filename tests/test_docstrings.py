"""Shared parameter descriptions are written into every docstring that names them."""

from __future__ import annotations

import inspect
import re

import stmix
from stmix._docs import PARAMS, doc_params


def test_a_placeholder_becomes_the_shared_description_and_other_braces_stay():
    def function(adata, copy=False):
        """Do a thing to ``uns[f"{key_added}_x"]``.

        Parameters
        ----------
        copy
            {copy}
        other
            {not_shared}
        """

    doc = doc_params(function).__doc__
    assert f"        copy\n            {PARAMS['copy']}\n" in doc
    assert '``uns[f"{key_added}_x"]``' in doc and "{not_shared}" in doc


def test_no_public_docstring_keeps_a_placeholder():
    placeholder = re.compile(r"^\s*\{(" + "|".join(PARAMS) + r")\}$", re.MULTILINE)
    for namespace in (stmix.pp, stmix.tl, stmix.pl):
        for name in namespace.__all__:
            member = getattr(namespace, name)
            doc = inspect.getdoc(member) or ""
            assert not placeholder.search(doc), f"{namespace.__name__}.{name}"
    library_key = inspect.getdoc(stmix.pp.split).split("library_key\n", 1)[1]
    assert library_key.startswith("    Column of ``obs`` naming each spot's section")
