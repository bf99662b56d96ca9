"""Reruns with a reproducibility verdict.

A run is rebuilt from its RO-Crate alone (read with ``rocrate``): the embedded workflow spec
(checked against its recorded sha256), the parameter values and the recorded outputs of every
task try. A rerun is an ordinary run of the workflow whose param ``rerun_of`` names the original
(``DAG_ID/RUN_ID``, a run id, ``latest``, or a crate imported under ``TWINPROV_HOME/imports``);
its steps use the original's parameter values, and its publication compares every output with
the original's and records a :class:`Verdict` (PROV, crate, ``twinprov show``).

``rerun_of`` is untrusted input: it must name a run of the same workflow (``W``, or its
scheduled-rerun DAG ``W__reproduce``) or a crate of that workflow inside ``TWINPROV_HOME``;
anything else is refused (:class:`RerunRefused`) before anything of the named run is read.
Crate content is untrusted too: every path it names must stay inside the crate (no absolute
names, no ``..``, no symlinks), and an imported crate (a folder or a ``.zip``) is copied or
unpacked under ``TWINPROV_HOME/imports`` within :data:`MAX_CRATE_FILES` and
:data:`MAX_CRATE_BYTES`.

Byte identity is the default rule. An output may declare a numeric tolerance in the spec
(``compare: {rtol, atol}``): NetCDF, CSV and Parquet outputs then count as equal when they have
the same variables/columns and shapes and their values agree within it.
"""

from __future__ import annotations

__all__ = [
    "EXPLAIN_ENV",
    "MAX_CRATE_BYTES",
    "MAX_CRATE_FILES",
    "RERUN_PARAM",
    "RecordedRun",
    "RerunError",
    "RerunRefused",
    "changed_inputs",
    "effective_params",
    "hand_written",
    "import_crate",
    "read_crate",
    "resolve_original",
    "task_order",
]

import hashlib
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from twinprov.app.crate_unpack import (
    MAX_CRATE_BYTES,
    MAX_CRATE_FILES,
    copy_folder,
    crate_root,
    unpack_zip,
)
from twinprov.app.cwl_rerun import cwl_changed_inputs, cwl_params, cwl_spec, is_cwl
from twinprov.app.errors import RerunError, RerunRefused
from twinprov.provenance.config import Settings
from twinprov.provenance.env_facts import comparable_facts
from twinprov.provenance.hashing import sha256_file
from twinprov.provenance.ids import CrateIds
from twinprov.provenance.spec import RERUN_PARAM, WorkflowSpec, load_spec

PROVENANCE_PROFILE = "https://w3id.org/ro/wfrun/provenance/0.5"
_COMPLETED = "http://schema.org/CompletedActionStatus"

IMPORTS = "imports"
"""Folder under ``TWINPROV_HOME`` holding imported crates."""
_DAG_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,249}")
"""A DAG id twinprov makes (a workflow name, or ``<name>__reproduce``)."""


@dataclass(frozen=True)
class RecordedOutput:
    """One output of the original run, as its crate records it."""

    step: str
    name: str
    sha256: str
    media_type: str
    path: Path | None
    """Where the original bytes can be read now (copied into the crate, or at their location)."""


@dataclass(frozen=True)
class RecordedRun:
    """What a rerun needs from the original run's crate."""

    crate: Path
    dag_id: str
    run_id: str
    run_iri: str
    spec_file: Path
    spec_sha256: str
    params: Mapping[str, Any]
    outputs: Mapping[tuple[str, str], RecordedOutput]
    step_inputs: Mapping[str, Mapping[str, str]]
    """Per step: input name → sha256 the step used."""
    images: Mapping[str, str | None] = field(default_factory=dict)
    facts: Mapping[str, Mapping[str, Any]] | None = None
    """Per step (its last completed try): the comparable environment facts the crate records
    (``reproducibility/environment.json``); ``None`` if the crate records none."""


# -- reading a crate ------------------------------------------------------------------------


def _ids(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (symlinks resolved) is ``root`` or inside it."""
    return path.resolve().is_relative_to(root.resolve())


def _crate_file(crate_dir: Path, ident: str, what: str) -> Path:
    """The file a crate-relative identifier names; :class:`RerunError` if the name is absolute,
    has a ``..``, is a symlink or resolves outside the crate. The message names only the
    identifier: nothing about what lies outside the crate."""
    rel = unquote(ident)
    if "://" in ident or rel.startswith(("/", "\\", "~")) or Path(rel).is_absolute():
        raise RerunError(f"the crate's {what} {ident} is not a path inside the crate: refused")
    path = crate_dir / rel
    if ".." in PurePosixPath(rel).parts:
        raise RerunError(f"the crate's {what} {ident} leaves the crate: refused")
    if path.is_symlink():
        raise RerunError(f"the crate's {what} {ident} is a symlink: refused")
    if not _inside(crate_dir, path):
        raise RerunError(f"the crate's {what} {ident} leaves the crate: refused")
    return path


def _local_path(
    crate_dir: Path, ident: str, references: Path | None, hint: str | None = None
) -> Path | None:
    """Where a recorded file can be read now: a file of the crate; for a file referenced by
    checksum, its bytes packed with the crate (``data/sha256-…``, see
    :mod:`twinprov.app.crate_data`) or its location hint (a ``file://`` URI) inside
    ``references`` (the run's own folder, for a crate twinprov published here); never anything
    else."""
    if ident.startswith("#sha256-"):  # referenced by checksum
        return _by_checksum(crate_dir, ident.removeprefix("#sha256-"), hint, references)
    if ident.startswith("file://"):  # crates published before references were by checksum
        hint = ident
        return _by_checksum(crate_dir, "", hint, references)
    if "://" in ident or ident.startswith("#"):
        return None
    p = _crate_file(crate_dir, ident, "file")
    return p if p.is_file() else None


def _by_checksum(
    crate_dir: Path, sha256: str, hint: str | None, references: Path | None
) -> Path | None:
    from twinprov.ro_crates.crate_terms import packed_data_name

    if re.fullmatch(r"[0-9a-f]{64}", sha256):
        packed = _crate_file(crate_dir, packed_data_name(sha256), "packed data")
        if packed.is_file():
            return packed
    if references is None or not hint or not hint.startswith("file://"):
        return None
    p = Path(unquote(urlparse(hint).path))
    ok = p.is_absolute() and not p.is_symlink() and _inside(references, p)
    return p if ok and p.is_file() else None


def _sha256(path: Path) -> str:
    return sha256_file(path)[0]


def read_crate(
    crate_dir: Path, *, workflow: str | None = None, references: Path | None = None
) -> RecordedRun:
    """The original run as its crate describes it; :class:`RerunError` if it is not one of ours.

    ``workflow``: refuse (:class:`RerunRefused`) a crate of any other workflow, before its spec,
    params or outputs are read. ``references``: follow ``file://`` references to outputs only
    inside this folder (the run's own folder, for a crate twinprov published here; none are
    followed by default: an imported crate's point at another machine's files).
    """
    from rocrate.rocrate import ROCrate

    crate_dir = Path(crate_dir)
    metadata = crate_dir / "ro-crate-metadata.json"
    if not metadata.is_file():
        raise RerunError(f"{crate_dir} is not an RO-Crate folder (no ro-crate-metadata.json)")
    if metadata.is_symlink():
        raise RerunError(f"{crate_dir}: its ro-crate-metadata.json is a symlink: refused")
    try:
        crate = ROCrate(str(crate_dir))
    except Exception as e:
        raise RerunError(f"cannot read the crate {crate_dir}: {e}") from e
    profiles = {getattr(p, "id", p) for p in _ids(crate.root_dataset.get("conformsTo"))}
    if PROVENANCE_PROFILE not in profiles:
        raise RerunError(
            f"{crate_dir} is not a Provenance Run Crate: its conformsTo lacks {PROVENANCE_PROFILE}"
        )
    run = crate.get("#run")
    iri = str(run.get("identifier") or "") if run is not None else ""
    parts = iri.rsplit("/", 2)  # <base>run/<dag>/<run>
    if len(parts) != 3 or not parts[0].endswith("run"):
        raise RerunError(f"{crate_dir} was not published by twinprov: it has no '#run' action")
    dag_id, run_id = unquote(parts[1]), unquote(parts[2])
    if not _DAG_ID.fullmatch(dag_id) or not run_id or "/" in run_id:
        raise RerunError(f"{crate_dir}: its '#run' names no valid DAG id and run id: refused")
    if workflow is not None and workflow_of(dag_id) != workflow_of(workflow):
        raise _refused(workflow)
    main = crate.mainEntity
    if main is None:
        raise RerunError(f"{crate_dir} has no main workflow (mainEntity)")
    spec_file = _crate_file(crate_dir, str(main.id), "workflow spec (mainEntity)")
    recorded = str(main.get("sha256") or "")
    if not spec_file.is_file():
        raise RerunError(f"the crate's workflow spec {main.id} is missing from {crate_dir}")
    actual = _sha256(spec_file)
    if recorded != actual:
        raise RerunError(
            f"the crate's workflow spec {main.id} does not match its recorded sha256 "
            f"({recorded[:12]}…): the crate was altered"
        )
    params = {
        str(pv.get("name")): pv.get("value")
        for pv in _ids(run.get("object"))
        if "PropertyValue" in _ids(pv.type) and pv.get("name") != RERUN_PARAM
    }
    if is_cwl(spec_file):  # CWL values: File/Directory objects recorded as JSON text
        params = cwl_params(params)
    outputs: dict[tuple[str, str], RecordedOutput] = {}
    inputs: dict[str, dict[str, str]] = {}
    tries: dict[str, tuple[int, Any]] = {}
    for entity in crate.get_entities():
        parsed = CrateIds.parse_task_try(entity.id)
        if parsed is None or "CreateAction" not in _ids(entity.type):
            continue
        step, _map_index, n = parsed
        if str(entity.get("actionStatus")) != _COMPLETED:
            continue
        if step not in tries or n > tries[step][0]:
            tries[step] = (n, entity)
    for step, (_n, entity) in tries.items():
        for kind, target in (("out", outputs), ("in", None)):
            refs = entity.get("result") if kind == "out" else entity.get("object")
            for f in _ids(refs):
                if "File" not in _ids(getattr(f, "type", None)) or not f.get("sha256"):
                    continue
                names = [  # a parameter the crate names without describing: its id only
                    CrateIds.tool_param_name(
                        w if isinstance(w, str) else getattr(w, "id", ""), step, kind
                    )
                    for w in _ids(f.get("exampleOfWork"))
                ]
                for name in filter(None, names):
                    if target is not None:
                        target[(step, name)] = RecordedOutput(
                            step,
                            name,
                            str(f["sha256"]),
                            str(f.get("encodingFormat") or ""),
                            _local_path(crate_dir, f.id, references, f.get("contentUrl")),
                        )
                    else:
                        inputs.setdefault(step, {})[name] = str(f["sha256"])
    facts = (
        _recorded_facts(crate_dir, {step: e.id for step, (_n, e) in tries.items()})
        if _explaining()
        else None
    )
    return RecordedRun(
        crate=crate_dir,
        dag_id=dag_id,
        run_id=run_id,
        run_iri=iri,
        spec_file=spec_file,
        spec_sha256=recorded,
        params=params,
        outputs=outputs,
        step_inputs=inputs,
        facts=facts,
    )


FACTS_FILE = "reproducibility/environment.json"
_MAX_FACTS_BYTES = 32 * 1024 * 1024


def _recorded_facts(
    crate_dir: Path, actions: Mapping[str, str]
) -> dict[str, Mapping[str, Any]] | None:
    """The environment facts of each step's counted try (``step → facts``), from the crate's
    :data:`FACTS_FILE`; ``None`` if the crate has none (published before they were recorded).
    Untrusted: a file that is not a JSON object of objects is ignored."""
    import json

    path = _crate_file(crate_dir, FACTS_FILE, "environment facts")
    try:
        if not path.is_file() or path.stat().st_size > _MAX_FACTS_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    out: dict[str, Mapping[str, Any]] = {}
    for step, action in actions.items():
        entry = data.get(action)
        if isinstance(entry, dict) and isinstance(entry.get("facts"), dict):
            out[step] = comparable_facts(entry["facts"])
    return out


# -- finding the original ---------------------------------------------------------------------


def import_crate(settings: Settings, source: Path) -> Path:
    """Copy a crate folder, or unpack a crate ``.zip``, under ``TWINPROV_HOME/imports``
    (where reruns may read it); the imported crate's folder.

    The crate is checked as it is brought in: no symlinks, names that stay inside it, at most
    :data:`MAX_CRATE_FILES` files and :data:`MAX_CRATE_BYTES` bytes; then it must be one of
    twinprov's Provenance Run Crates. Nothing is written outside ``TWINPROV_HOME/imports``,
    and a refused crate leaves nothing behind.
    """
    source = Path(source)
    imports = settings.home / IMPORTS
    imports.mkdir(parents=True, exist_ok=True)
    root = imports.resolve()
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    try:
        if source.is_file() and zipfile.is_zipfile(source):
            unpack_zip(source, staging / "crate")
            crate = crate_root(staging / "crate")
        elif source.is_dir():
            (staging / "crate").mkdir()
            copy_folder(source, staging / "crate")
            crate = staging / "crate"
        else:
            raise RerunError(f"{source} is neither a crate folder nor a crate .zip")
        recorded = read_crate(crate)  # refuse anything that is not one of our crates
        key = hashlib.sha256((crate / "ro-crate-metadata.json").read_bytes()).hexdigest()[:16]
        dest = root / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', recorded.dag_id).lstrip('.')}-{key}"
        if not dest.resolve().is_relative_to(root) or dest.parent != root:
            raise RerunError(f"{source}: its DAG id makes no safe folder name: refused")
        if not dest.is_dir():
            try:
                crate.replace(dest)
            except OSError:  # imported meanwhile by another process
                if not dest.is_dir():
                    raise
        return dest
    except OSError as e:
        raise RerunError(f"cannot import the crate {source}: {e.strerror or e}") from e
    finally:
        if staging.resolve().parent == root:
            shutil.rmtree(staging, ignore_errors=True)


def _refused(workflow: str) -> RerunRefused:
    w = workflow_of(workflow)
    return RerunRefused(
        f"rerun_of refused: a rerun of {w} may only name a run of {w} ({w}/RUN_ID, "
        f"{w}{REPRODUCE_SUFFIX}/RUN_ID, a run id or latest) or a crate of {w}"
    )


def resolve_original(settings: Settings, ref: str, dag_id: str) -> RecordedRun:
    """The run ``ref`` names, read from its crate.

    ``ref`` is ``latest`` (the newest successful run of ``dag_id``), ``DAG_ID/RUN_ID``, a run id,
    or a crate folder inside ``TWINPROV_HOME`` (``imports/…`` or a run's ``crate``). Params are
    untrusted input: a crate anywhere else on the machine must be imported first
    (``twinprov rerun CRATE`` does that), and ``ref`` must name a run (or a crate) of the same
    workflow as ``dag_id`` (``W`` and ``W__reproduce`` are one workflow); anything else is
    :class:`RerunRefused` before the ledger or any crate is read.
    """
    from twinprov.provenance.ledger import Ledger

    workflow = workflow_of(dag_id)
    ref = ref.strip()
    path = Path(ref)
    if path.is_absolute() or ref.startswith(f"{IMPORTS}/"):
        full = settings.home / path  # an absolute path stays itself
        if not _inside(settings.home, full) or full.resolve() == settings.home.resolve():
            raise RerunError(
                f"rerun_of names {ref}, outside {settings.home}: import the crate first "
                "(`twinprov rerun CRATE` does)"
            )
        return read_crate(full.resolve(), workflow=workflow)
    if ref == "latest":
        runs = Ledger(settings.ledger_url).runs()
        done = [r for r in runs if r.dag_id == workflow and r.state == "success"]
        done = [
            r
            for r in done
            if r.publication.get("crate") and not r.info.get("params", {}).get(RERUN_PARAM)
        ]
        if not done:
            raise RerunError(f"no successful, published run of {workflow} to re-run")
        rec = max(done, key=lambda r: r.first_seen)
    else:
        d, sep, r = ref.partition("/")
        if sep and workflow_of(d) != workflow:
            raise _refused(workflow)  # before the ledger is asked whether that run exists
        runs = Ledger(settings.ledger_url).runs()
        matches = (
            [x for x in runs if (x.dag_id, x.run_id) == (d, r)]
            if sep
            else [x for x in runs if x.run_id == ref and workflow_of(x.dag_id) == workflow]
        )
        if not matches:
            raise RerunError(f"rerun_of: no recorded run '{ref}' of {workflow}")
        rec = matches[0]
    crate = rec.publication.get("crate")
    if not crate:
        raise RerunError(f"run {rec.dag_id}/{rec.run_id} has no crate yet (`twinprov publish`)")
    from twinprov.provenance.workspace import run_dir

    # outputs too large to copy into the crate are read where the run wrote them, and only there
    own = run_dir(settings.runs_dir, rec.dag_id, rec.run_id)
    return read_crate(Path(str(crate)), workflow=workflow, references=own)


REPRODUCE_SUFFIX = "__reproduce"


def workflow_of(dag_id: str) -> str:
    """The workflow a DAG runs (a scheduled-rerun DAG ``W__reproduce`` runs ``W``)."""
    return dag_id.removesuffix(REPRODUCE_SUFFIX)


def effective_params(settings: Settings, dag_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The params a run really uses: for a rerun, the original's values (plus ``rerun_of``).

    :class:`RerunRefused` if ``rerun_of`` names a run or crate of another workflow."""
    ref = str(params.get(RERUN_PARAM) or "")
    if not ref:
        return dict(params)
    original = resolve_original(settings, ref, workflow_of(dag_id))
    merged = {k: v for k, v in params.items() if k not in original.params}
    merged.update(original.params)
    merged[RERUN_PARAM] = ref
    return merged


EXPLAIN_ENV = "TWINPROV_RERUN_EXPLAIN"
"""``off``: compare bytes only (no grading of differing outputs, no environment differences);
for measuring what explaining costs."""


def _explaining() -> bool:
    import os

    return os.environ.get(EXPLAIN_ENV, "").strip().lower() not in ("off", "0", "false", "no")


def changed_inputs(settings: Settings, original: RecordedRun) -> list[str]:
    """Workflow inputs (data files params name) whose bytes differ from the original's now.

    A hand-written DAG's inputs (its inlets) are compared after the rerun, by the verdict."""
    from twinprov.provenance.errors import WorkspaceError
    from twinprov.provenance.workspace import safe_path

    if hand_written(original):
        return []
    if is_cwl(original.spec_file):
        return cwl_changed_inputs(original.spec_file, original.params, original.step_inputs)
    spec = spec_of(original)
    changed = []
    for s in spec.steps:
        for i in s.inputs:
            src, _, param = i.from_.partition(".")
            recorded = original.step_inputs.get(s.id, {}).get(i.name)
            if src != "params" or recorded is None or param not in original.params:
                continue
            try:
                path = safe_path(settings.data_dir, str(original.params[param]))
            except WorkspaceError as e:
                changed.append(f"{s.id}.{i.name}: {e}")
                continue
            if not path.is_file():
                changed.append(f"{s.id}.{i.name}: {path} no longer exists")
            elif _sha256(path) != recorded:
                changed.append(f"{s.id}.{i.name}: {path} has other bytes than the original used")
    return changed


def spec_of(original: RecordedRun) -> WorkflowSpec:
    """The workflow spec embedded in the original's crate (a CWL document: its steps in the
    shape the comparison reads)."""
    if is_cwl(original.spec_file):
        return cwl_spec(original.spec_file)  # type: ignore[return-value]
    return load_spec(original.spec_file)


def hand_written(original: RecordedRun) -> bool:
    """Whether the original is a run of a hand-written Airflow DAG (its crate's workflow is
    the DAG's Python file, not a workflow spec)."""
    return original.spec_file.suffix == ".py"


def task_order(dag_tasks: Any) -> list[str]:
    """Task ids of a hand-written DAG, upstream first (``info["dag_tasks"]`` of its run)."""
    from graphlib import CycleError, TopologicalSorter

    graph = {
        str(t["task_id"]): {str(u) for u in t.get("upstream") or ()}
        for t in dag_tasks or ()
        if isinstance(t, Mapping) and t.get("task_id")
    }
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError:  # not from Airflow (a DAG has none): keep the recorded order
        return list(graph)
