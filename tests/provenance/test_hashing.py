"""Parallel sha256: same digests as hashlib, input order kept, unreadable files reported."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from twinprov.provenance.hashing import hash_files, sha256_file


@pytest.mark.parametrize("size", [0, 1, 2047, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 7])
def test_sha256_file_matches_hashlib(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert sha256_file(path) == (hashlib.sha256(data).hexdigest(), size)


@pytest.mark.parametrize("workers", [1, 2, 8])
def test_hash_files_in_parallel(tmp_path: Path, workers: int) -> None:
    blobs = {f"f{i:03d}": os.urandom(i * 997) for i in range(150)}
    blobs["big"] = os.urandom(3 << 20)
    paths = []
    for name, data in blobs.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    paths.reverse()
    missing = tmp_path / "missing"
    got = hash_files([*paths, missing, paths[0]], workers=workers)
    assert [d.path for d in got] == [*paths, missing, paths[0]]
    for d in got[: len(paths)]:
        data = blobs[d.path.name]
        assert d.sha256 == hashlib.sha256(data).hexdigest() and d.size == len(data)
        assert d.error is None and d.seconds >= 0
    assert got[-2].sha256 is None and got[-2].error
    assert got[-1] == got[0]
