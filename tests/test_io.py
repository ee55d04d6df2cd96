"""Files are written under a temporary name and renamed: a failure loses nothing."""

from __future__ import annotations

import pytest

from stmix._io import atomic_file, atomic_folder


def test_a_failed_write_keeps_the_old_file_and_leaves_no_part(tmp_path):
    target = tmp_path / "out.h5ad"
    target.write_text("the old result")
    with pytest.raises(OSError, match="disk full"), atomic_file(target) as temporary:
        assert temporary.suffix == ".h5ad" and temporary.parent == tmp_path
        temporary.write_text("half of the new")
        raise OSError("disk full")
    assert target.read_text() == "the old result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5ad"]


def test_a_complete_write_replaces_and_creates_the_folder(tmp_path):
    target = tmp_path / "new" / "figure.png"
    with atomic_file(target) as temporary:
        temporary.write_text("done")
    assert target.read_text() == "done" and len(list(target.parent.iterdir())) == 1
    with pytest.raises(IsADirectoryError, match="is a folder"), atomic_file(tmp_path / "new"):
        pass


def test_a_folder_is_swapped_whole(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(target) as folder:
        (folder / "config.json").write_text("new, half")
        raise RuntimeError("interrupted")
    assert (target / "config.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    with atomic_folder(target) as folder:
        (folder / "config.json").write_text("new")
    assert (target / "config.json").read_text() == "new" and len(list(tmp_path.iterdir())) == 1
