"""runtime: atomic writes keep the user's permissions and never leave a half-written file."""

from __future__ import annotations

import os
import stat

import pytest

from capsrobust.runtime import atomic_write, atomic_write_text


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
