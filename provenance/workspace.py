"""Run folders: where a run's steps work and where its provenance files are written."""

from __future__ import annotations

__all__ = ["run_dir", "run_slug", "safe_path", "workspace_dir"]

import re
from pathlib import Path

from provenance.errors import WorkspaceError
from provenance.stepwrap import PathEscapeError, resolve_inside


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
