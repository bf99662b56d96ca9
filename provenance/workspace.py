"""Run folders: where a run's steps work and where its provenance files are written."""

from __future__ import annotations

__all__ = [
    "run_dir",
    "run_slug",
    "safe_path",
    "snapshot_cwl",
    "snapshot_spec",
    "stage_input",
    "staged_input_path",
    "spec_snapshot_path",
    "workspace_dir",
]

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from twinprov.provenance.errors import WorkspaceError
from twinprov.provenance.stepwrap import PathEscapeError, resolve_inside


def run_slug(run_id: str) -> str:
    """A run id made safe as a folder name (``manual__2026-…+00:00`` → ``manual__2026-…_00_00``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


def run_dir(runs_root: Path, dag_id: str, run_id: str) -> Path:
    """The folder of one run: ``<runs_root>/<dag_id>/<run slug>``."""
    return runs_root / run_slug(dag_id) / run_slug(run_id)


def workspace_dir(runs_root: Path, dag_id: str, run_id: str) -> Path:
    """Where the run's steps read and write their files."""
    return run_dir(runs_root, dag_id, run_id) / "work"


def safe_path(workspace: Path, rel: str) -> Path:
    """``rel`` resolved inside ``workspace``; :class:`WorkspaceError` if it would leave it."""
    try:
        return resolve_inside(workspace, rel)
    except PathEscapeError as e:
        raise WorkspaceError(str(e)) from e


def spec_snapshot_path(runs_root: Path, dag_id: str, run_id: str, spec_path: str) -> Path:
    """Where the run keeps the copy of the spec it started from."""
    return run_dir(runs_root, dag_id, run_id) / "spec" / Path(spec_path).name


def snapshot_spec(
    runs_root: Path, dag_id: str, run_id: str, spec_path: str, sha256: str
) -> Path | None:
    """Copy the spec into the run folder once, if its bytes are still those the run recorded."""
    from twinprov.provenance.spec import parse_spec, workflow_files

    def files(data: bytes) -> Iterable[Path]:  # the programs and suites it names
        return workflow_files(parse_spec(data.decode("utf-8"), str(spec_path)), Path(spec_path))

    return _snapshot(
        spec_snapshot_path(runs_root, dag_id, run_id, spec_path), spec_path, sha256, files
    )


def snapshot_cwl(
    runs_root: Path, dag_id: str, run_id: str, cwl_path: str, sha256: str
) -> Path | None:
    """Copy a CWL document, and the documents its steps run that lie in its folder, into the
    run once (as :func:`snapshot_spec` does for a spec), if its bytes are still those the run
    recorded; the copy of the document, or ``None``."""
    from twinprov.provenance.cwl_doc import document_files, load_cwl

    path = cwl_path.split("#", 1)[0]
    dest = spec_snapshot_path(runs_root, dag_id, run_id, path)
    return _snapshot(dest, path, sha256, lambda _data: document_files(load_cwl(cwl_path)))


def _snapshot(
    dest: Path, path: str, sha256: str, files: Callable[[bytes], Iterable[Path]]
) -> Path | None:
    """Copy the workflow at ``path`` to ``dest``, with the ``files`` it names that lie in its
    folder (same relative places), once; ``None`` if its bytes are no longer ``sha256``."""
    import hashlib
    import os
    import shutil
    import tempfile

    if dest.is_file():
        return dest
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        return None  # edited since the run started: better no copy than a wrong one
    base = Path(path).resolve().parent
    dest.parent.mkdir(parents=True, exist_ok=True)
    for src in files(data):
        if Path(src).resolve().is_relative_to(base):  # others are named by absolute paths
            target = dest.parent / Path(src).resolve().relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".spec-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, dest)  # the workflow last: its presence means the snapshot is complete
    return dest


def staged_input_path(name: str, value: str) -> str:
    """Where a workflow input named by a param is placed in the run workspace."""
    return f"inputs/{name}/{Path(value).name}"


def stage_input(data_dir: Path, workspace: Path, name: str, value: str) -> Path:
    """Copy the data file a param names (relative to the data folder) into the workspace.

    Raises :class:`WorkspaceError` if the value leaves the data folder or names no file.
    """
    import shutil

    try:
        src = resolve_inside(data_dir, value)
    except PathEscapeError as e:
        raise WorkspaceError(f"input '{name}': {e} (data folder {data_dir})") from e
    if not src.is_file():
        raise WorkspaceError(f"input '{name}': no file {value} in the data folder {data_dir}")
    dest = workspace / staged_input_path(name, value)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
    return dest
