"""A run's PROV graph as an SVG picture: ``prov.dot.prov_to_dot`` + Graphviz ``dot``. No Airflow.

Needs the ``prov[dot]`` extra (pydot) and the Graphviz ``dot`` program (Debian: ``graphviz``).
Pictures are cached in memory by file, size and modification time (a republished run gets a new
picture).
"""

from __future__ import annotations

__all__ = ["PictureError", "prov_svg"]

import shutil
import subprocess
import threading
from collections import OrderedDict
from pathlib import Path

from twinprov.provenance.errors import TwinprovError

_CACHE: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
_CACHE_SIZE = 64
_lock = threading.Lock()


class PictureError(TwinprovError):
    """The picture cannot be drawn (missing Graphviz, unreadable document)."""


def _dot_source(prov_json: Path) -> str:
    from prov.model import ProvDocument

    try:
        from prov.dot import prov_to_dot
    except ModuleNotFoundError as e:
        raise PictureError(f"{e} (pip install 'prov[dot]')") from e
    try:
        doc = ProvDocument.deserialize(source=str(prov_json), format="json")
    except Exception as e:  # prov raises a variety of errors for broken documents
        raise PictureError(f"cannot read the PROV document {prov_json.name}: {e}") from e
    dot = prov_to_dot(
        doc,
        use_labels=True,
        direction="BT",
        show_element_attributes=False,  # the page's tables and the PROV files carry them
        show_relation_attributes=False,
    )
    return str(dot.to_string())


def prov_svg(prov_json: Path, *, timeout_s: float = 30.0) -> bytes:
    """The SVG picture of the PROV-JSON document at ``prov_json``."""
    st = prov_json.stat()
    key = (str(prov_json), st.st_mtime_ns, st.st_size)
    with _lock:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    dot = shutil.which("dot")
    if dot is None:
        raise PictureError(
            "Graphviz is not installed: the `dot` program is missing "
            "(Debian/Ubuntu: apt-get install graphviz)"
        )
    try:
        proc = subprocess.run(
            [dot, "-Tsvg"],
            input=_dot_source(prov_json).encode("utf-8"),
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise PictureError(f"Graphviz took longer than {timeout_s:g} s to draw the graph") from e
    if proc.returncode != 0:
        raise PictureError(f"Graphviz failed: {proc.stderr.decode('utf-8', 'replace')[:500]}")
    svg = proc.stdout
    with _lock:
        _CACHE[key] = svg
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return svg
