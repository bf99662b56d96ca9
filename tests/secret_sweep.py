"""The secrets sweep: search bytes (files, database dumps, graph-store dumps) for planted secret
values, raw, percent-encoded and base64-encoded. Used by every test that checks that no secret
reaches a published file (the stack's, the yProv publication's)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _encodings(value: str) -> set[bytes]:
    import base64
    from urllib.parse import quote

    raw = value.encode()
    return {raw, quote(value, safe="").encode(), base64.b64encode(raw)}


def find_secrets(blobs: dict[str, bytes], secrets: dict[str, str]) -> list[str]:
    """``"<what> in <where>"`` for each secret found in a blob."""
    hits = []
    for what, value in secrets.items():
        for enc in _encodings(value):
            for where, data in blobs.items():
                if enc in data:
                    hits.append(f"{what} in {where}")
    return hits


def files_under(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by path. SQLite files are read by a child process: closing a
    descriptor of a database this process has open drops SQLite's POSIX locks on it, and the
    next write by another process then corrupts it ("disk I/O error", "malformed")."""
    out = {}
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        if ".db" in p.name or ".sqlite" in p.name:
            out[str(p)] = subprocess.run(
                ["cat", str(p)], capture_output=True, check=False
            ).stdout
        else:
            out[str(p)] = p.read_bytes()
    return out
