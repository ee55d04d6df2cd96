"""Messages name a parameter as the caller spells it: ``name=`` from Python, ``--flag`` on the
command line."""

import pytest

from stmix import _options, _validate


def test_python_spelling_outside_the_command_line():
    assert _options.arg("layer") == "`layer=`"
    assert _options.arg("augment", "snr") == "augment='snr'"
    assert _options.arg("batch_size", 1) == "batch_size=1"
    assert _options.name("size") == "`size`"
    assert _options.unset("root") == "pass root=None"
    assert _options.from_python() and _options.offers("image")


def test_command_line_spelling_inside_spelled():
    with _options.spelled({"layer": "--layer", "batch_size": "--batch-size", "augment": "-a"}):
        assert _options.arg("layer") == "`--layer`"
        assert _options.arg("augment", "snr") == "-a snr"
        assert _options.arg("batch_size", 1) == "--batch-size 1"
        assert _options.name("batch_size") == "`--batch-size`"
        assert _options.unset("layer") == "leave out --layer"
        # a parameter the command has no option for keeps its Python name
        assert _options.arg("image") == "`image=`" and not _options.offers("image")
        assert _options.offers("layer") and not _options.from_python()
        with pytest.raises(ValueError, match=r"^`--batch-size` must be a positive integer"):
            _validate.integer("batch_size", 0)
    assert _options.arg("layer") == "`layer=`"  # the block's spelling ends with it


def test_spelling_ends_when_the_block_raises():
    with pytest.raises(RuntimeError), _options.spelled({"layer": "--layer"}):
        raise RuntimeError
    assert _options.from_python()
