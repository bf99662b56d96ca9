"""sha256 of many files at once, in parallel threads.

``hashlib`` releases the GIL while it digests a buffer, so threads hash different files on
different cores. Small files are read in one call; large ones stream through a per-thread buffer.
"""

from __future__ import annotations

__all__ = ["FileDigest", "default_workers", "hash_files", "sha256_file"]

import hashlib
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20
_BATCH = 64
_local = threading.local()


@dataclass(frozen=True)
class FileDigest:
    """The sha256 of one file, or why it could not be read."""

    path: Path
    sha256: str | None
    size: int | None
    seconds: float
    """Time this file kept one worker busy."""
    error: str | None = None


def _buffer() -> memoryview:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(_CHUNK))
    return buf


def sha256_file(path: str | Path) -> tuple[str, int]:
    """sha256 hex digest and size of one file.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size <= _CHUNK:
            data = f.read()
            while len(data) < size:  # a short read (e.g. a network file system)
                more = f.read()
                if not more:
                    break
                data += more
            return hashlib.sha256(data).hexdigest(), len(data)
        h = hashlib.sha256()
        buf = _buffer()
        total = 0
        while n := f.readinto(buf):
            h.update(buf[:n])
            total += n
        return h.hexdigest(), total


def _digest(path: Path) -> FileDigest:
    t0 = time.perf_counter()
    try:
        sha, size = sha256_file(path)
    except OSError as e:
        return FileDigest(path, None, None, time.perf_counter() - t0, e.strerror or str(e))
    return FileDigest(path, sha, size, time.perf_counter() - t0)


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def hash_files(paths: Iterable[str | Path], workers: int | None = None) -> list[FileDigest]:
    """Hash files in parallel; results come back in the order of ``paths``.

    Largest files are started first so that one big file does not start last and finish alone.
    A file that cannot be read gets ``sha256=None`` and an ``error``; nothing is raised.

    Args:
        paths: the files to hash (duplicates are hashed once).
        workers: threads to use; default one per usable CPU.
    """
    items = [Path(p) for p in paths]
    unique = list(dict.fromkeys(items))
    sizes: dict[Path, int] = {}
    for p in unique:
        try:
            sizes[p] = p.stat().st_size
        except OSError:
            sizes[p] = -1
    order = sorted(unique, key=lambda p: -sizes[p])
    # one task per large file, small files in batches (a task costs more than a small file)
    tasks: list[list[Path]] = []
    batch: list[Path] = []
    for p in order:
        if sizes[p] >= _CHUNK:
            tasks.append([p])
            continue
        batch.append(p)
        if len(batch) == _BATCH:
            tasks.append(batch)
            batch = []
    if batch:
        tasks.append(batch)
    n = workers or default_workers()
    done: dict[Path, FileDigest] = {}
    if n <= 1 or len(tasks) <= 1:
        for task in tasks:
            done.update(_digest_all(task))
    else:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="sha256") as pool:
            for part in pool.map(_digest_all, tasks):
                done.update(part)
    return [done[p] for p in items]


def _digest_all(paths: list[Path]) -> dict[Path, FileDigest]:
    return {p: _digest(p) for p in paths}
