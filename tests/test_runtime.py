"""runtime: atomic writes keep the user's permissions and never leave a half-written file."""

from __future__ import annotations

import os
import stat

import pytest

from capsrobust.runtime import atomic_write, atomic_write_text, check_folder_can_be_made


def test_atomic_writes_get_the_permissions_of_any_other_new_file(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "table.csv", "a,b\n")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "table.csv").stat().st_mode)
    assert mode == 0o640 == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)


def test_a_write_that_fails_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.csv"
    atomic_write_text(target, "old\n")

    def half_then_fail(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_a_folder_that_cannot_be_made_is_refused_without_making_anything(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(NotADirectoryError) as refused:
        check_folder_can_be_made(tmp_path / "file" / "a" / "b")
    assert refused.value.filename == str(tmp_path / "file")  # the one-line error names the culprit
    with pytest.raises(OSError, match="symbolic links"):
        check_folder_can_be_made(tmp_path / "loop" / "run")
    check_folder_can_be_made(tmp_path / "new" / "deeper")  # makeable: no error, and nothing made yet
    check_folder_can_be_made(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file", "loop"]
