"""``twinprov cwl-runner``: run a CWL document like ``cwl-runner`` does, through Airflow.

The document becomes its DAG (:mod:`twinprov.dags.cwl_factory`), the job its run conf; the run
goes through ``dag.test()`` with the listener, so it is published like every run. Afterwards the
workflow's output object is assembled from the steps' output objects, its files are copied into
``--outdir``, and the object is printed as JSON (the cwl-runner contract that cwltest drives).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from twinprov.dags.runner import ensure_database, prepare_environment


def _copy_out(value: Any, outdir: Path, taken: dict[Path, Path] | None = None) -> Any:
    """Copy every File/Directory of a CWL object into ``outdir``; locations rewritten.

    Two different outputs with one name (two steps that each write ``out``) get distinct
    names (``out_2``), as cwltool does; the same file reached twice is copied once. ``taken``
    maps each name used in ``outdir`` to the file it holds."""
    taken = {} if taken is None else taken
    if isinstance(value, list):
        return [_copy_out(v, outdir, taken) for v in value]
    if not isinstance(value, Mapping):
        return value
    if value.get("class") not in ("File", "Directory"):
        return {k: _copy_out(v, outdir, taken) for k, v in value.items()}
    out = dict(value)
    src = out.get("path") or (
        unquote(urlparse(str(out.get("location", ""))).path)
        if str(out.get("location", "")).startswith("file://")
        else None
    )
    if src and Path(src).exists():
        dest = _free_name(outdir, Path(src), taken)
        if Path(src).resolve() != dest.resolve():
            if Path(src).is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dest)
        out["location"] = dest.resolve().as_uri()
        out["path"] = str(dest.resolve())
        if dest.name != Path(src).name:
            out["basename"] = dest.name
            out.pop("nameroot", None)
            out.pop("nameext", None)
        if "listing" in out:
            out["listing"] = [_relisted(v, Path(src), dest) for v in out["listing"]]
    if "secondaryFiles" in out:
        out["secondaryFiles"] = [_copy_out(v, outdir, taken) for v in out["secondaryFiles"]]
    return out


def _free_name(outdir: Path, src: Path, taken: dict[Path, Path]) -> Path:
    """Where ``src`` goes in ``outdir``: its own name, or ``stem_N.suffix`` when that name
    already holds another output of this run."""
    real = src.resolve()
    n = 1
    while True:
        name = src.name if n == 1 else f"{src.stem}_{n}{src.suffix}"
        dest = outdir / name
        if taken.setdefault(dest, real) == real:
            return dest
        n += 1


def _relisted(value: Any, old: Path, new: Path) -> Any:
    if isinstance(value, list):
        return [_relisted(v, old, new) for v in value]
    if not isinstance(value, Mapping):
        return value
    out = {k: _relisted(v, old, new) for k, v in value.items()}
    if out.get("class") in ("File", "Directory"):
        p = out.get("path") or unquote(urlparse(str(out.get("location", ""))).path)
        try:
            rel = Path(p).resolve().relative_to(old.resolve())
        except ValueError:
            return out
        out["path"] = str((new / rel).resolve())
        out["location"] = (new / rel).resolve().as_uri()
    return out


def _local(ref: str) -> str:
    """A path from a path or a ``file://`` URI (cwltest passes URIs)."""
    if ref.startswith("file://"):
        parsed = urlparse(ref)
        return unquote(parsed.path) + (f"#{parsed.fragment}" if parsed.fragment else "")
    return ref


def _ensure_database_once() -> None:
    """Migrate Airflow's metadata DB under a file lock: a test harness starts several runners
    at once on a fresh home, and two migrations of one SQLite file would collide."""
    import fcntl

    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".twinprov-migrate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            ensure_database()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_cwl(document: str, job_path: str | None, outdir: str) -> tuple[int, dict[str, Any] | None]:
    """Run ``document`` with the job through Airflow; (exit code, output object or None).

    The exit code follows cwltool's: 0 success, 1 failure, 33 unsupported feature.
    """
    from twinprov.provenance.cwl_doc import load_cwl, load_job, workflow_outputs
    from twinprov.provenance.errors import CwlUnsupportedError

    document = _local(document)
    job_path = _local(job_path) if job_path else None
    doc_path = str(Path(document.split("#", 1)[0]).resolve()) + (
        "#" + document.split("#", 1)[1] if "#" in document else ""
    )
    # one document to parse, on a machine that may be busy: Airflow's 30 s limit on importing
    # the DAG file would otherwise fail the run ("dag is not serialized") under load
    os.environ.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "600")
    prepare_environment()
    os.environ["TWINPROV_CWL_DOCUMENT"] = doc_path
    _ensure_database_once()
    from twinprov.dags.cwl_factory import build_cwl_dag
    from twinprov.dags.cwl_operator import (
        INPUTS_TASK,
        STATUS_FILE,
        UNSUPPORTED,
        step_outputs,
    )
    from twinprov.provenance.config import Settings
    from twinprov.provenance.workspace import workspace_dir

    try:
        doc = load_cwl(doc_path)
        job = load_job(job_path)
        dag = build_cwl_dag(doc_path)
    except CwlUnsupportedError as e:
        print(f"twinprov: {e}", file=sys.stderr)
        return UNSUPPORTED, None
    dr = dag.test(run_conf=job or None)
    state = str(getattr(dr.state, "value", dr.state))
    ws = workspace_dir(Settings.load().runs_dir, dag.dag_id, dr.run_id)
    codes = []
    # every task's status, the steps of task groups (cwl/<group>/cwl/<step>/) and the elements
    # of scattered steps (cwl/<step>/<k>/) included
    for status in sorted(ws.glob(f"cwl/**/{STATUS_FILE}")):
        record = json.loads(status.read_text())
        codes.append(int(record["exit_code"]))
        if record.get("message"):
            parts = status.parent.relative_to(ws).parts
            step_id = ".".join(p for p in parts if p != "cwl" and not p.isdigit())
            # the reason, last on stderr (the lines above are Airflow's log)
            print(f"twinprov: CWL step {step_id} failed: {record['message']}", file=sys.stderr)
    if state != "success":
        return (UNSUPPORTED if UNSUPPORTED in codes else 1), None
    done = step_outputs(ws, doc)
    result = workflow_outputs(doc, done.get(INPUTS_TASK, job), done)
    out = Path(outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return 0, _copy_out(result, out)
