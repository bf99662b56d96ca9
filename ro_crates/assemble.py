"""The ledger and the workflow spec → a :class:`~twinprov.ro_crates.model.CrateInput`.

Reads only: the run's events (the publish task's own events left out), the run record, the spec
file the run was started from and the files its steps run. Nothing here imports Airflow.
"""

from __future__ import annotations

from twinprov import __version__

__all__ = [
    "crate_input_from_ledger",
    "publication_of",
    "dag_workflow_info",
    "media_type_of",
    "twinprov_version",
    "workflow_info",
]

import logging
import mimetypes
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from twinprov.provenance.config import Settings
from twinprov.provenance.env_facts import comparable_facts
from twinprov.provenance.errors import RunNotFoundError, SpecError
from twinprov.provenance.hashing import sha256_file
from twinprov.provenance.ids import Ids
from twinprov.provenance.ledger import Ledger, RunRecord, TaskEvent
from twinprov.provenance.record import StepTry, collapse_tries, run_state
from twinprov.provenance.spec import WorkflowSpec, load_spec, placeholders, render, workflow_files
from twinprov.provenance.workspace import run_dir
from twinprov.ro_crates.errors import CrateInputError, SpecChangedError
from twinprov.ro_crates.model import (
    CrateInput,
    FileRecord,
    MlflowRunRef,
    Organization,
    ParamSpec,
    Person,
    Publication,
    RunInfo,
    SourceFile,
    StacItemRef,
    StepInput,
    StepOutput,
    StepSpec,
    TaskTry,
    ValidationReport,
    WorkflowInfo,
)

log = logging.getLogger(__name__)

PUBLISH_ROLE = "publish"
"""Payload role of the publish task's events (same value as ``twinprov.app.publish``)."""

_WORKFLOW_DIR = "${workflow_dir}/"
_MEDIA_TYPES = {
    ".py": "text/x-python",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".json": "application/json",
    ".nc": "application/x-netcdf",
    ".csv": "text/csv",
    ".sh": "application/x-sh",
    ".r": "text/x-r",
}


def media_type_of(path: str | Path) -> str:
    """A media type guessed from the file name (``application/octet-stream`` if unknown)."""
    suffix = PurePosixPath(str(path)).suffix.lower()
    if suffix in _MEDIA_TYPES:
        return _MEDIA_TYPES[suffix]
    guess, _ = mimetypes.guess_type(str(path), strict=False)
    return guess or "application/octet-stream"


def twinprov_version() -> str:
    """The installed twinprov version."""
    return __version__


def _step_params(texts: list[str]) -> tuple[str, ...]:
    names: list[str] = []
    for text in texts:
        for ref in placeholders(text):
            head, _, name = ref.partition(".")
            if head == "params" and name and name not in names:
                names.append(name)
    return tuple(names)


def _step_sources(texts: list[str], workflow_dir: Path) -> tuple[str, ...]:
    """Files of the workflow folder a command names as ``${workflow_dir}/REL``."""
    found: list[str] = []
    root = workflow_dir.resolve()
    for text in texts:
        if not text.startswith(_WORKFLOW_DIR):
            continue
        rel = text[len(_WORKFLOW_DIR) :]
        if not rel or placeholders(rel) or rel.startswith("/"):
            continue
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():
            continue
        rel_posix = path.relative_to(root).as_posix()
        if rel_posix not in found:
            found.append(rel_posix)
    return tuple(found)


def workflow_info(spec_path: str | Path, recorded_sha256: str | None = None) -> WorkflowInfo:
    """The prospective part of a crate, read from a spec file.

    Args:
        spec_path: the workflow spec the run was started from.
        recorded_sha256: the spec's sha256 recorded at run time; if given, the file must
            still have these bytes.

    Raises:
        CrateInputError: the spec cannot be read or parsed.
        SpecChangedError: the spec's bytes differ from ``recorded_sha256``.
    """
    path = Path(spec_path)
    try:
        current, size = sha256_file(path)
    except OSError as e:
        raise CrateInputError(f"cannot read the workflow spec {path}: {e.strerror}") from e
    if recorded_sha256 and current != recorded_sha256:
        raise SpecChangedError(str(path), recorded_sha256, current)
    try:
        spec = load_spec(path)
    except SpecError as e:
        raise CrateInputError(str(e)) from e
    return _workflow_info(spec, path.resolve(), current)


def _workflow_info(spec: WorkflowSpec, path: Path, sha256: str) -> WorkflowInfo:
    workflow_dir = path.parent
    steps: list[StepSpec] = []
    all_sources: list[str] = []
    for position, s in enumerate(spec.topological_order()):
        texts = [*s.command, *s.args, *s.env.values()]
        sources = _step_sources([*s.command, *s.args], workflow_dir)
        all_sources += [r for r in sources if r not in all_sources]
        build = spec.build_of(s)
        steps.append(
            StepSpec(
                id=s.id,
                position=position,
                description=s.description,
                image=spec.image_of(s),
                command=(*s.command, *s.args),
                target=spec.target_of(s),
                inputs=tuple(StepInput(i.name, i.from_) for i in s.inputs),
                outputs=tuple(StepOutput(o.name, o.path, o.media_type) for o in s.outputs),
                params=_step_params(texts),
                env=dict(s.env),
                sources=sources,
                homepage=spec.homepage_of(s),
                build=Path(build).as_posix() if build else None,
            )
        )
    # and every other file the workflow uses (validation suites…): a rerun needs them all
    for extra in workflow_files(spec, path):
        rel_posix = extra.relative_to(workflow_dir.resolve()).as_posix()
        if rel_posix not in all_sources:
            all_sources.append(rel_posix)
    source_files = []
    for rel in all_sources:
        p = workflow_dir / rel
        digest, size = sha256_file(p)
        source_files.append(SourceFile(rel, p, digest, size, media_type_of(p)))
    return WorkflowInfo(
        name=spec.name,
        version=spec.version,
        spec_path=path,
        spec_sha256=sha256,
        steps=tuple(steps),
        description=spec.description,
        license=spec.license,
        authors=tuple(
            Person(a.name, a.orcid, a.email, a.affiliation, a.affiliation_url) for a in spec.authors
        ),
        params=tuple(
            ParamSpec(name, p.type, p.default, p.description) for name, p in spec.params.items()
        ),
        sources=tuple(source_files),
        homepage=spec.homepage,
        publisher=Organization(spec.publisher.name, spec.publisher.url) if spec.publisher else None,
    )


_PARAM_TYPES = {bool: "boolean", int: "integer", float: "number"}


def dag_workflow_info(
    dag_id: str, info: Mapping[str, Any], tries: Sequence[StepTry] = ()
) -> WorkflowInfo:
    """The prospective part of a crate for a hand-written Airflow DAG: the DAG file (its copy
    taken at run start, if there is one) is the workflow, its tasks are the steps, in dependency
    order; a task's ``file://`` outlets are its outputs, its inlets its inputs (from the task
    whose outlet has the same URI, if one has).

    Raises:
        CrateInputError: the DAG file cannot be read.
        SpecChangedError: its bytes differ from those recorded at run time.
    """
    recorded = str(info.get("dag_file_sha256") or "")
    path = Path(str(info.get("dag_snapshot") or info.get("dag_file") or ""))
    try:
        current, _size = sha256_file(path)
    except OSError as e:
        raise CrateInputError(f"cannot read the DAG file {path}: {e.strerror}") from e
    if current != recorded:
        raise SpecChangedError(str(path), recorded, current)
    raw = [t for t in info.get("dag_tasks") or [] if isinstance(t, Mapping) and t.get("task_id")]
    listed = {str(t["task_id"]) for t in raw}
    raw += [{"task_id": t.task_id} for t in tries if t.task_id not in listed]
    by_id = {str(t["task_id"]): t for t in raw}
    order: list[str] = []

    def visit(task_id: str, seen: tuple[str, ...] = ()) -> None:
        if task_id in order or task_id in seen or task_id not in by_id:
            return
        for up in by_id[task_id].get("upstream") or ():
            visit(str(up), (*seen, task_id))
        order.append(task_id)

    for task_id in sorted(by_id):
        visit(task_id)
    producers: dict[str, tuple[str, str]] = {}
    for task_id in order:
        for o in by_id[task_id].get("outlets") or ():
            if isinstance(o, Mapping) and str(o.get("uri", "")).startswith("file:"):
                producers.setdefault(str(o["uri"]), (task_id, str(o.get("name") or "")))
    steps = []
    for position, task_id in enumerate(order):
        t = by_id[task_id]
        outputs = tuple(
            StepOutput(str(o.get("name") or ""), str(o["uri"]), media_type_of(str(o["uri"])))
            for o in t.get("outlets") or ()
            if isinstance(o, Mapping) and str(o.get("uri", "")).startswith("file:")
        )
        inputs = []
        for i in t.get("inlets") or ():
            if not isinstance(i, Mapping) or not str(i.get("uri", "")).startswith("file:"):
                continue
            producer = producers.get(str(i["uri"]))
            source = f"{producer[0]}.{producer[1]}" if producer else f"params.{i.get('name')}"
            inputs.append(StepInput(str(i.get("name") or ""), source))
        operator = str(t.get("operator") or "task")
        doc = str(t.get("doc") or "").strip()
        steps.append(
            StepSpec(
                id=task_id,
                position=position,
                description=f"Airflow task ({operator})" + (f": {doc}" if doc else ""),
                target="airflow",
                inputs=tuple(inputs),
                outputs=outputs,
            )
        )
    given = info.get("params")
    params: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    return WorkflowInfo(
        name=dag_id,
        version=recorded[:12],
        spec_path=path.resolve(),
        spec_sha256=recorded,
        steps=tuple(steps),
        description=str(info.get("dag_description") or f"Airflow DAG {dag_id}"),
        params=tuple(
            ParamSpec(str(k), _PARAM_TYPES.get(type(v), "string"), v if _scalar(v) else None)
            for k, v in sorted(params.items())
        ),
        language="airflow",
    )


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _records(
    items: Any, step: StepSpec | None, workflow: WorkflowInfo, ids: Ids, *, outputs: bool
) -> tuple[FileRecord, ...]:
    out: list[FileRecord] = []
    for rec in items or []:
        if not isinstance(rec, Mapping) or not rec.get("sha256") or rec.get("size") is None:
            continue  # never written, or escaped the workspace: nothing to describe
        name = str(rec.get("name") or "")
        rel = rec.get("path")
        media = rec.get("media_type") or _declared_media_type(name, step, workflow, outputs)
        loc = rec.get("abs_path") or rel
        out.append(
            FileRecord(
                name=name,
                path=Path(str(loc)),
                sha256=str(rec["sha256"]),
                size=int(rec["size"]),
                media_type=str(media or media_type_of(str(loc))),
                rel_path=str(rel) if rel else None,
                iri=ids.data(str(rec["sha256"])),
            )
        )
    return tuple(out)


def _declared_media_type(
    name: str, step: StepSpec | None, workflow: WorkflowInfo, outputs: bool
) -> str | None:
    if step is None:
        return None
    if outputs:
        return next((o.media_type for o in step.outputs if o.name == name), None)
    inp = next((i for i in step.inputs if i.name == name), None)
    if inp is None or inp.producer is None:
        return None
    producer = workflow.step(inp.producer)
    if producer is None:
        return None
    return next((o.media_type for o in producer.outputs if o.name == inp.item), None)


def _rendered_env(
    step: StepSpec, workflow: WorkflowInfo, params: Mapping[str, Any]
) -> dict[str, str]:
    """The step's environment variables as the run set them (spec values, placeholders filled)."""
    if not step.env:
        return {}
    values = {f"params.{k}": str(v) for k, v in params.items()}
    values["workflow_dir"] = str(workflow.spec_path.parent)
    for o in step.outputs:
        values[f"outputs.{o.name}"] = o.path
    for i in step.inputs:
        if i.producer is None:
            values[f"inputs.{i.name}"] = str(params.get(i.item, ""))
        else:
            producer = workflow.step(i.producer)
            outs = producer.outputs if producer else ()
            values[f"inputs.{i.name}"] = next((o.path for o in outs if o.name == i.item), "")
    rendered = {}
    for key, text in sorted(step.env.items()):
        try:
            rendered[key] = render(text, values)
        except KeyError:  # a placeholder the run did not have a value for
            rendered[key] = text
    return rendered


def _task_try(
    t: StepTry,
    workflow: WorkflowInfo,
    ids: Ids,
    dag_id: str,
    run_id: str,
    params: Mapping[str, Any],
) -> TaskTry:
    p, m = t.payload, t.manifest
    step = workflow.step(t.task_id)
    usage: dict[str, float] = {}
    for key, value in (m.get("resource_usage") or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            usage[str(key)] = float(value)
    if isinstance(m.get("duration_s"), int | float):
        usage["duration_s"] = float(m["duration_s"])
    error = t.error
    manifest_errors = [str(e) for e in m.get("errors") or []]
    if manifest_errors and (t.state in ("failed", "up_for_retry") or error):
        error = "; ".join([e for e in [error, *manifest_errors] if e])
    env = p.get("environment")
    exit_code = m.get("exit_code")
    return TaskTry(
        task_id=t.task_id,
        try_number=t.try_number,
        state=t.state,
        start=t.start or m.get("started_at"),
        end=t.end or m.get("ended_at"),
        error=error,
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        image=p.get("image"),
        image_digest=p.get("image_digest"),
        environment=dict(env) if isinstance(env, Mapping) else {},
        inputs=_records(m.get("inputs"), step, workflow, ids, outputs=False),
        outputs=_records(m.get("outputs"), step, workflow, ids, outputs=True),
        resource_usage=usage,
        map_index=t.map_index,
        target=p.get("target"),
        command=tuple(str(a) for a in m.get("command") or ()),
        env=_rendered_env(step, workflow, params) if step else {},
        host=p.get("hostname") or m.get("host"),
        iri=ids.run_ns + ids.task_local(dag_id, run_id, t.task_id, t.map_index, t.try_number),
        facts=comparable_facts(p),
    )


def crate_input_from_ledger(
    settings: Settings,
    dag_id: str,
    run_id: str,
    *,
    already_read: tuple[RunRecord, list[TaskEvent]] | None = None,
) -> CrateInput:
    """Everything the ledger knows about one run, ready for
    :func:`twinprov.ro_crates.crate.build_crate`.

    Events of the publish task are left out; spooled events are ingested first, as the
    other readers of the ledger do. A caller that has just read the run and its events (the
    publication) passes them as ``already_read`` and the ledger is not read again.

    Raises:
        RunNotFoundError: the ledger has no such run.
        CrateInputError: the run's spec is not recorded, unreadable or invalid.
        SpecChangedError: the spec file changed since the run.
    """
    if already_read is None:
        ledger = Ledger(settings.ledger_url)
        ledger.ingest_spool(settings.spool_dir)
        found = ledger.run(dag_id, run_id)
        if found is None:
            raise RunNotFoundError(f"no recorded run {dag_id}/{run_id}")
        already_read = (found, ledger.events(dag_id, run_id))
    rec = already_read[0]
    events = [e for e in already_read[1] if e.payload.get("role") != PUBLISH_ROLE]
    step_tries = collapse_tries(events)
    info = rec.info
    # a copy of the spec taken at run start (if the runner keeps one) outlives edits to the spec
    spec_path = info.get("spec_snapshot") or info.get("spec_path")
    if info.get("cwl_path"):  # a CWL document's run: the document is the workflow
        from twinprov.ro_crates.cwl_crate import cwl_workflow_info

        cwl_path = str(info["cwl_path"])
        snapshot = info.get("spec_snapshot")
        if snapshot and Path(str(snapshot)).is_file():  # the exact document that ran
            cwl_path = str(snapshot) + ("#" + cwl_path.split("#", 1)[1] if "#" in cwl_path else "")
        workflow = cwl_workflow_info(cwl_path, info.get("spec_sha256"))
    elif not spec_path and info.get("dag_file_sha256"):
        workflow = dag_workflow_info(dag_id, info, step_tries)
    elif not spec_path:
        raise CrateInputError(f"run {dag_id}/{run_id} does not record its workflow spec")
    else:
        workflow = workflow_info(spec_path, info.get("spec_sha256"))
    ids = Ids(settings.base_iri)
    params = dict(info.get("params") or {})
    known = {s.id for s in workflow.steps}
    tries = []
    for t in step_tries:
        if t.task_id not in known:
            log.debug("twinprov: task %s is not a step of %s; left out", t.task_id, workflow.name)
            continue
        tries.append(_task_try(t, workflow, ids, dag_id, run_id, params))
    state = run_state(step_tries)
    # the workflow ran until its last step ended; ``rec.ended`` is when it was last published
    ends = sorted(t.end for t in tries if t.end)
    end = ends[-1] if ends else rec.ended
    run = RunInfo(
        dag_id=dag_id,
        run_id=run_id,
        state=state,
        start=info.get("run_start") or info.get("logical_date"),
        end=end,
        triggering_user=info.get("triggering_user"),
        params=params,
        twinprov_version=twinprov_version(),
        airflow_version=info.get("airflow_version"),
        run_type=info.get("run_type"),
        iri=ids.run(dag_id, run_id),
    )
    published = rec.publication.get("files") or {}
    prov_files = {name: Path(p) for name, p in sorted(published.items()) if Path(p).is_file()}
    if not prov_files:
        folder = run_dir(settings.runs_dir, dag_id, run_id) / "prov"
        prov_files = {p.name: p for p in sorted(folder.glob("prov.*")) if p.is_file()}
    return CrateInput(
        workflow=workflow,
        run=run,
        tries=tuple(tries),
        prov_files=prov_files,
        validations=_validations(rec.publication.get("validations")),
        stac_items=_stac_items(rec.publication.get("stac_items"), tries),
        mlflow_runs=_mlflow_runs(rec.publication.get("mlflow_runs")),
        verdict=rec.publication.get("verdict"),
        publication=publication_of(settings),
        yprov=rec.publication.get("yprov"),
    )


def publication_of(settings: Settings) -> Publication:
    """The deployment's publication settings, and the settings that shape a run and its crate
    (no ledger or server URL: they may carry credentials)."""
    engine_url = settings.crate_engine_url or _package_homepage()
    shaping = {
        "base_iri": settings.base_iri,
        "capture": settings.capture,
        "crate_copy_threshold": settings.crate_copy_threshold,
        "crate_base_uri": settings.crate_base_uri or None,
        "crate_publisher": settings.crate_publisher or None,
        "crate_publisher_url": settings.crate_publisher_url or None,
        "graph_store": "sparql-server" if settings.remote_store else "embedded",
        "step_env_passthrough": [p for p in settings.step_env_passthrough if p],
    }
    return Publication(
        base_uri=settings.crate_base_uri or None,
        publisher=Organization(settings.crate_publisher, settings.crate_publisher_url or None)
        if settings.crate_publisher
        else None,
        engine_url=engine_url,
        settings=shaping,
    )


def _package_homepage() -> str | None:
    """The home page twinprov's package metadata names, if any."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        meta = metadata("twinprov")
    except PackageNotFoundError:
        return None
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = str(entry).partition(",")
        if label.strip().lower() in ("homepage", "home", "documentation") and url.strip():
            return url.strip()
    home = meta.get_all("Home-page") or []
    return str(home[0]) if home else None


def _validations(raw: Any) -> tuple[ValidationReport, ...]:
    """Validation results the publication recorded (``[{output, sha256, success, …}]``)."""
    out = []
    for v in raw if isinstance(raw, list) else []:
        if not isinstance(v, Mapping) or not v.get("output") or not v.get("sha256"):
            continue
        paths = []
        for keys in (("report_json", "json"), ("report_html", "html")):
            value = next((v[k] for k in keys if v.get(k)), None)
            paths.append(Path(str(value)) if value and Path(str(value)).is_file() else None)
        out.append(
            ValidationReport(
                output=str(v["output"]),
                sha256=str(v["sha256"]),
                success=bool(v.get("success")),
                report_json=paths[0],
                report_html=paths[1],
                suite=str(v["suite"]) if v.get("suite") else None,
            )
        )
    return tuple(out)


def _stac_items(raw: Any, tries: list[TaskTry]) -> tuple[StacItemRef, ...]:
    """STAC Items the publication wrote: ``{output name: item path}`` (or a list of paths)."""
    items = raw.items() if isinstance(raw, Mapping) else ((None, p) for p in raw or [])
    latest: dict[str, str] = {}
    for t in tries:  # tries are in start order: the last writer of a name wins
        for o in t.outputs:
            latest[o.name] = o.sha256
    out = []
    for name, path in items:
        p = Path(str(path))
        if p.is_file():
            out.append(StacItemRef(p.stem, p, latest.get(str(name)) if name else None))
    return tuple(sorted(out, key=lambda i: i.item_id))


def _mlflow_runs(raw: Any) -> tuple[MlflowRunRef, ...]:
    out = []
    for m in raw if isinstance(raw, list) else []:
        if not isinstance(m, Mapping) or not m.get("run_id"):
            continue
        metrics = {
            str(k): float(v)
            for k, v in (m.get("metrics") or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        try_number = m.get("try_number")
        out.append(
            MlflowRunRef(
                run_id=str(m["run_id"]),
                tracking_uri=m.get("tracking_uri"),
                experiment_id=str(m["experiment_id"]) if m.get("experiment_id") else None,
                url=m.get("url"),
                uri=m.get("uri"),
                name=m.get("name"),
                task_id=m.get("task_id"),
                try_number=int(try_number) if isinstance(try_number, int) else None,
                metrics=metrics,
            )
        )
    return tuple(out)
