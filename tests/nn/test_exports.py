"""``stmix.nn``'s names load on first use, as the objects of their modules."""

from __future__ import annotations

import importlib

import pytest

import stmix.nn


@pytest.mark.parametrize("name", stmix.nn.__all__)
def test_each_name_is_its_modules_object_and_stays(name):
    module = importlib.import_module(f"stmix.nn.{stmix.nn._EXPORTS[name]}")
    first = getattr(stmix.nn, name)
    assert first is getattr(module, name)
    assert vars(stmix.nn)[name] is first  # kept: the next access is a plain attribute
    assert getattr(stmix.nn, name) is first


def test_dir_lists_every_name_before_it_loads():
    listed = dir(stmix.nn)
    assert set(stmix.nn.__all__) <= set(listed)
    assert listed == sorted(listed)
    assert "__getattr__" in listed


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match=r"module 'stmix\.nn' has no attribute 'mixer'"):
        stmix.nn.mixer  # noqa: B018
    assert not hasattr(stmix.nn, "mixer")
