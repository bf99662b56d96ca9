"""The local execution environment, recorded where a container image digest would be."""

from __future__ import annotations

__all__ = ["python_environment"]

import hashlib
import platform
import sys
from functools import lru_cache
from importlib import metadata
from typing import Any


@lru_cache(maxsize=1)
def python_environment() -> dict[str, Any]:
    """Interpreter and installed packages, with a digest of the sorted ``name==version`` list."""
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
    }
