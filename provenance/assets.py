"""Inputs and outputs of hand-written DAGs, from the Assets their tasks declare.

A task's ``inlets``/``outlets`` that name local files (``file://`` URIs) become the same
content-addressed file records as a spec step's outputs (sha256, size, media type, hashed after
the try), so "which runs used X" spans both kinds of DAG. Assets of other schemes (``s3://``,
``postgres://``…) are recorded by URI only: twinprov does not read their content, and the record
says so. Plain values in, plain dicts out: nothing here imports Airflow.
"""

from __future__ import annotations

__all__ = [
    "DAG_KIND",
    "HAND_WRITTEN_ROLE",
    "NOT_READ",
    "OUTPUT_SCHEME",
    "AssetRef",
    "asset_entries",
    "asset_label",
    "file_of",
    "local_file_record",
    "output_uri",
]

import mimetypes
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from twinprov.provenance.hashing import sha256_file

DAG_KIND = "airflow"
"""``info["dag_kind"]`` of a run of a hand-written DAG (spec runs have ``spec_path`` instead)."""
HAND_WRITTEN_ROLE = "task"
"""Payload role of a task try of a captured hand-written DAG (spec tasks: step, validate…)."""
NOT_READ = "content not recorded: twinprov reads only local files (file:// URIs)"
"""What the record of a non-file asset says about its content."""

OUTPUT_SCHEME = "twinprov"
"""URI scheme of the Airflow Assets of spec outputs (``twinprov://<workflow>/<step>/<output>``)."""


def output_uri(workflow: str, step: str, output: str) -> str:
    """The stable URI of one spec output (its Airflow Asset)."""
    parts = (quote(p, safe="") for p in (workflow, step, output))
    return f"{OUTPUT_SCHEME}://" + "/".join(parts)


_MEDIA_TYPES = {
    ".csv": "text/csv",
    ".json": "application/json",
    ".nc": "application/x-netcdf",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".txt": "text/plain",
    ".py": "text/x-python",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".parquet": "application/vnd.apache.parquet",
}


@dataclass(frozen=True)
class AssetRef:
    """One inlet or outlet as the task declared it (copied out of Airflow's Asset)."""

    uri: str
    name: str = ""
    direction: str = "outlet"
    """``inlet`` or ``outlet``."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """The asset's static ``extra`` merged with the try's asset event extra, if any."""


def file_of(uri: str) -> Path | None:
    """The local path a ``file://`` URI (no host, or ``localhost``) names; ``None`` otherwise."""
    parts = urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or not parts.path:
        return None
    return Path(unquote(parts.path))


def _media_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _MEDIA_TYPES:
        return _MEDIA_TYPES[suffix]
    guess, _ = mimetypes.guess_type(path.name, strict=False)
    return guess or "application/octet-stream"


def local_file_record(path: Path, name: str) -> dict[str, Any]:
    """The manifest entry of a local file: sha256, size and media type (``error`` if it could
    not be read, e.g. an outlet the try did not write)."""
    rec: dict[str, Any] = {"name": name, "path": str(path), "abs_path": str(path)}
    try:
        sha, size = sha256_file(path)
    except OSError as e:
        rec["error"] = f"not read: {e.strerror or e}"
        return rec
    rec.update(sha256=sha, size=size, media_type=_media_type(path))
    return rec


def asset_label(ref: AssetRef, path: Path | None = None) -> str:
    """The name a task's asset goes by in the record: the Asset's name when it has its own,
    else the file's name (or the URI)."""
    path = path if path is not None else file_of(ref.uri)
    if ref.name and ref.name != ref.uri:
        return ref.name
    return path.name if path is not None and path.name else ref.uri


def asset_entries(
    refs: Iterable[AssetRef], *, hash_files: bool
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """The try's manifest part (``{"inputs": […], "outputs": […]}`` of local files, hashed when
    ``hash_files``) and one record per asset (URI, direction, whether its content was read,
    its extra)."""
    manifest: dict[str, list[dict[str, Any]]] = {"inputs": [], "outputs": []}
    assets: list[dict[str, Any]] = []
    for ref in refs:
        path = file_of(ref.uri)
        label = asset_label(ref, path)
        entry: dict[str, Any] = {"uri": ref.uri, "name": label, "direction": ref.direction}
        if ref.extra:
            entry["extra"] = {str(k): v for k, v in ref.extra.items()}
        if path is None:
            entry["content"] = NOT_READ
        elif hash_files:
            rec = local_file_record(path, label)
            manifest["inputs" if ref.direction == "inlet" else "outputs"].append(rec)
            entry["content"] = "sha256" if rec.get("sha256") else rec.get("error", "not read")
            if rec.get("sha256"):
                entry["sha256"] = rec["sha256"]
        assets.append(entry)
    return manifest, assets
