"""The local execution environment, recorded where a container image digest would be.

Listing the installed distributions reads every ``METADATA`` file (about 0.1 s for a few hundred
packages), which every task process of a step would pay. The result is kept in memory and in a
small cache file, both keyed by the interpreter and by the names of the distribution folders on
``sys.path``: installing, upgrading or removing a distribution adds, renames or removes a
``NAME-VERSION.dist-info`` folder, so a changed environment is listed anew.
"""

from __future__ import annotations

__all__ = ["python_environment"]

import contextlib
import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from twinprov.provenance.files import atomic_write

CACHE_ENV = "TWINPROV_ENV_CACHE_DIR"
"""Folder of the cache file (default: ``$XDG_CACHE_HOME/twinprov`` or ``~/.cache/twinprov``)."""

_DIST_SUFFIXES = (".dist-info", ".egg-info")
_LISTING_VERSION = b"2"
"""Part of the cache key: a listing of an older shape (no package list) is made anew."""
_memo: dict[str, dict[str, Any]] = {}


def _listing() -> dict[str, Any]:
    pkgs = sorted(
        {f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in metadata.distributions()}
    )
    listing = "\n".join([f"python=={platform.python_version()}", *pkgs])
    return {
        "kind": "python",
        "digest": hashlib.sha256(listing.encode()).hexdigest()[:16],
        "packages_sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "python_version": platform.python_version(),
        "python_executable": sys.executable,
        "package_count": len(pkgs),
        "platform": platform.platform(),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}".strip(),
        "libc": " ".join(platform.libc_ver()).strip() or None,
        # the list itself, not only its digest: a rerun names the package that changed
        "packages": pkgs,
    }


def _key() -> str:
    """What the listing depends on: the interpreter, the system and the distribution folders
    (``*.dist-info``, ``*.egg-info``, whose names carry the version) in every ``sys.path``
    entry. ``platform.platform()`` is not part of it: it scans the interpreter binary (10 ms).
    Entries without distributions are left out: a task process adds its DAG folder to
    ``sys.path``, and must find the listing that the scheduler it was forked from made (the
    same distributions), not list them again and replace the scheduler's cache file."""
    h = hashlib.sha256(_LISTING_VERSION)
    for part in (sys.executable, platform.python_version(), " ".join(os.uname())):
        h.update(part.encode() + b"\0")
    for entry in sys.path:
        names = _dist_names(entry)
        if not names:
            continue
        h.update(b"\1" + os.fsencode(entry))
        for name in names:
            h.update(b"\0" + name.encode(errors="surrogateescape"))
    return h.hexdigest()


_listed: dict[str, tuple[int, list[str]]] = {}
"""Distribution folder names per ``sys.path`` entry, with the entry's ``st_mtime_ns`` when they
were read: adding, renaming or removing a folder in it changes that time, so an unchanged time
spares reading the folder again (site-packages: hundreds of names, every task process)."""


def _dist_names(entry: str) -> list[str]:
    try:
        mtime = os.stat(entry or ".").st_mtime_ns
    except OSError:
        return []
    known = _listed.get(entry)
    if known is not None and known[0] == mtime:
        return known[1]
    try:
        with os.scandir(entry or ".") as it:
            names = sorted(e.name for e in it if e.name.endswith(_DIST_SUFFIXES))
    except NotADirectoryError:  # a zip or egg file
        names = [str(mtime)]
    except OSError:
        names = []
    _listed[entry] = (mtime, names)
    return names


def _cache_file() -> Path:
    folder = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "twinprov",
    )
    # one file per interpreter, replaced when its environment changes
    name = hashlib.sha256(sys.executable.encode()).hexdigest()[:16]
    return Path(folder) / f"python-environment-{name}.json"


def _read_cache(path: Path, key: str) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    env = data.get("environment")
    return env if isinstance(env, dict) else None


def _write_cache(path: Path, key: str, env: dict[str, Any]) -> None:
    # readers see the old file or the whole new one; it is only a cache: on failure the next
    # process lists the distributions again
    with contextlib.suppress(OSError):
        atomic_write(path, json.dumps({"key": key, "environment": env}, sort_keys=True))


def python_environment() -> dict[str, Any]:
    """Interpreter, OS and libc, and the installed packages (``packages``: the sorted
    ``name==version`` list), with a digest of that list."""
    key = _key()
    env = _memo.get(key)
    if env is None:
        path = _cache_file()
        env = _read_cache(path, key)
        if env is None:
            env = _listing()
            _write_cache(path, key, env)
        _memo.clear()
        _memo[key] = env
    return dict(env)
