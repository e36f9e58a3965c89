"""The sweep directory's writer lock: one writer at a time, stale locks taken over, the lock gone when done."""

from __future__ import annotations

import json
import os
import socket

import pytest

from capsrobust.evaluation.plan import SweepError
from capsrobust.evaluation.store import LOCK_FILE, writer_lock


def _lock(folder, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid}))


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path):
    _lock(tmp_path, os.getppid())  # a live process that is not us: pytest's parent
    with pytest.raises(SweepError, match=rf"being written by another capsrobust \(pid {os.getppid()} on "), \
            writer_lock(tmp_path):
        pass
    assert (tmp_path / LOCK_FILE).is_file()  # never ours to remove


def test_a_lock_on_another_host_is_respected(tmp_path):
    _lock(tmp_path, 1, host="elsewhere.example")
    with pytest.raises(SweepError, match=r"on elsewhere\.example"), writer_lock(tmp_path):
        pass


def test_a_stale_lock_is_taken_over_and_ours_is_removed_when_done(tmp_path):
    _lock(tmp_path, 2**22 + 12345)  # above Linux's pid_max default: no such process
    with writer_lock(tmp_path):
        held = json.loads((tmp_path / LOCK_FILE).read_text())
        assert held == {"host": socket.gethostname(), "pid": os.getpid()}
    assert not (tmp_path / LOCK_FILE).exists()
