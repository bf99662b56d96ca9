"""Writing and locking files safely: one ``atomic_write`` and one file lock for the whole package
(content hashing is :mod:`twinprov.provenance.hashing`; the step wrapper keeps its own, since it
ships alone and stays stdlib-only)."""

from __future__ import annotations

__all__ = ["atomic_write", "file_lock", "lock_fd"]

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def atomic_write(path: str | Path, data: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one: a
    temporary file in the same folder, then a rename. The folder is created if needed.

    Raises:
        OSError: the folder or the file cannot be written (no temporary file is left behind).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode(encoding) if isinstance(data, str) else data)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return dest


def lock_fd(fd: int, *, blocking: bool) -> bool:
    """``flock`` an open file exclusively; ``False`` if another process holds it (non-blocking).
    Where there is no ``flock`` (not POSIX) it returns ``True``: callers rely on idempotence."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def file_lock(lock_path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created if missing) for the ``with`` block; other
    processes wait. The lock dies with its holder."""
    path = Path(lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        lock_fd(fd, blocking=True)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
