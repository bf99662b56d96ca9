"""One atomic_write and one file lock for the package."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from twinprov.provenance.files import atomic_write, file_lock, lock_fd


def test_atomic_write_replaces_whole_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "verdict.json"
    atomic_write(target, "first")
    atomic_write(target, b"second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["verdict.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    atomic_write(target, "old")
    (tmp_path / "report.html.d").mkdir()
    with pytest.raises(OSError):
        atomic_write(tmp_path / "report.html.d", "cannot replace a folder")
    assert target.read_text() == "old"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _hold(path: str, ready: mp.synchronize.Event, release: mp.synchronize.Event) -> None:
    with file_lock(path):
        ready.set()
        release.wait(30)


def test_file_lock_excludes_another_process(tmp_path: Path) -> None:
    lock = tmp_path / "catalog.lock"
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(lock), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        fd = os.open(lock, os.O_RDWR)
        try:
            assert lock_fd(fd, blocking=False) is False  # held by the other process
            release.set()
            holder.join(30)
            deadline = time.monotonic() + 10
            while not lock_fd(fd, blocking=False):
                assert time.monotonic() < deadline, "the lock outlived its holder"
                time.sleep(0.05)
        finally:
            os.close(fd)
    finally:
        release.set()
        holder.join(30)
