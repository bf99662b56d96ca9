"""Publication: a run's ledger events → PROV files (JSON, PROV-N, Turtle) → the graph store.

Files are written to a temporary folder and renamed into place, so a reader never sees half a
publication. The graph store is an index of the ledger: if it is busy or down, the files and the
ledger still record the run, and :func:`catch_up` loads it later.
"""

from __future__ import annotations

__all__ = [
    "PROV_FORMATS",
    "Publication",
    "catch_up",
    "export_run",
    "events_gap",
    "publish_pending",
    "publish_run",
]

import hashlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as with_fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prov.model import ProvDocument

from twinprov.provenance.assets import HAND_WRITTEN_ROLE
from twinprov.provenance.config import Settings
from twinprov.provenance.errors import PublishError, RunNotFoundError, StoreError, TwinprovError
from twinprov.provenance.files import atomic_write
from twinprov.provenance.ids import Ids
from twinprov.provenance.ledger import Ledger, RunRecord, TaskEvent
from twinprov.provenance.prov_model import RunFacts, add_document_copy, build_document
from twinprov.provenance.record import StepTry, Verdict, collapse_tries, latest_tries, run_state
from twinprov.provenance.spec import RERUN_PARAM
from twinprov.provenance.store import GraphStore, open_store
from twinprov.provenance.workspace import run_dir, run_slug

log = logging.getLogger(__name__)

PROV_FORMATS = {"provjson": "prov.json", "provn": "prov.provn", "turtle": "prov.ttl"}
PUBLISH_ROLE = "publish"


@dataclass(frozen=True)
class Publication:
    """What one publication wrote."""

    dag_id: str
    run_id: str
    state: str
    graph: str
    files: dict[str, str]
    digest: str
    triples: int | None = None
    store_error: str | None = None
    tries: int = 0
    gaps: dict[str, str] = field(default_factory=dict)
    """Stages that could not be done now (e.g. MLflow unreachable), with the reason."""
    verdict: dict[str, Any] | None = None
    """For a rerun: the reproducibility verdict (:class:`twinprov.app.rerun.Verdict` as a dict)."""


def _step_events(events: list[TaskEvent]) -> list[TaskEvent]:
    return [e for e in events if e.payload.get("role") != PUBLISH_ROLE]


def _serialize(doc: ProvDocument, fmt: str) -> str:
    # the serializer classes themselves, as ``doc.serialize(format=…)`` would pick them: that
    # registry first imports every serializer, PROV-N's lexer and parser included (50 ms)
    buffer = io.StringIO()
    if fmt == "provjson":
        from prov.serializers.provjson import ProvJSONSerializer

        ProvJSONSerializer(doc).serialize(buffer, indent=2)
    elif fmt == "provn":
        return doc.get_provn()
    elif fmt in ("turtle", "jsonld"):
        from prov.serializers.provrdf import ProvRDFSerializer

        rdf_format = "turtle" if fmt == "turtle" else "json-ld"
        ProvRDFSerializer(doc).serialize(buffer, rdf_format=rdf_format)
    else:
        raise PublishError(
            f"unknown PROV format '{fmt}' (choose provjson, provn, turtle or jsonld)"
        )
    return buffer.getvalue()


def _write_atomically(folder: Path, contents: dict[str, str]) -> dict[str, str]:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prov-", dir=folder.parent))
    try:
        for name, text in contents.items():
            (tmp / name).write_text(text, encoding="utf-8")
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PublishError(f"cannot write provenance files under {folder}: {e}") from e
    return {name: str(folder / name) for name in contents}


def build_run_document(
    settings: Settings, dag_id: str, run_id: str, *, ingest: bool = True
) -> tuple[ProvDocument, str]:
    """The run's PROV document as the ledger has it now, and the run state it implies.

    ``ingest`` first takes spooled events into the ledger (publication does; readers do not).
    """
    ledger = Ledger(settings.ledger_url)
    if ingest:
        ledger.ingest_spool(settings.spool_dir)
    rec = ledger.run(dag_id, run_id)
    if rec is None:
        raise RunNotFoundError(f"no recorded run {dag_id}/{run_id}")
    events = _step_events(ledger.events(dag_id, run_id))
    state = run_state(collapse_tries(events))
    end = rec.ended if rec.state == state and rec.ended else None
    mlflow_runs = rec.publication.get("mlflow_runs") or ()
    facts = RunFacts(dag_id, run_id, rec.info, state, end, mlflow_runs)
    return build_document(Ids(settings.base_iri), facts, events), state


def _stac_stage(
    settings: Settings, spec: Any, rec: RunRecord, tries: list[Any], ended: str, graph: str
) -> dict[str, str]:
    from twinprov import __version__
    from twinprov.ro_crates.stac import StacOutput, publish_items

    declared: dict[str, bool | None] = {}
    if spec is not None:
        declared = {o.name: o.geospatial for s in spec.steps for o in s.outputs}
    outputs = []
    for t in latest_tries(tries):
        if t.state != "success":
            continue
        ins = tuple(str(i["sha256"]) for i in t.manifest.get("inputs") or [] if i.get("sha256"))
        for o in t.manifest.get("outputs") or []:
            if not o.get("sha256"):
                continue
            outputs.append(
                StacOutput(
                    name=str(o["name"]),
                    step=t.task_id,
                    path=Path(str(o.get("abs_path") or o["path"])),
                    sha256=str(o["sha256"]),
                    size=int(o.get("size") or 0),
                    media_type=str(o.get("media_type") or "application/octet-stream"),
                    input_sha256s=ins,
                    geospatial=declared.get(str(o["name"])),
                )
            )
    if not outputs:
        return {}
    result = publish_items(
        settings.stac_dir,
        dag_id=rec.dag_id,
        run_id=rec.run_id,
        run_slug=run_slug(rec.run_id),
        run_iri=graph,
        outputs=outputs,
        software={
            "twinprov": __version__,
            "apache-airflow": str(rec.info.get("airflow_version", "unknown")),
        },
        processed_at=datetime.fromisoformat(ended),
        crate_metadata=crate_dir(settings, rec.dag_id, rec.run_id) / "ro-crate-metadata.json",
        description=spec.description if spec is not None else "",
    )
    return {name: str(path) for name, path in sorted(result.items.items())}


def _validation_report(
    settings: Settings, dag_id: str, run_id: str, tries: list[Any]
) -> str | None:
    """One readable HTML page of every validation of the run, beside the GX result JSONs."""
    import json

    checks = [v for t in tries if (v := t.validation) is not None]
    paths = [Path(v.report) for v in checks if v.report]
    if not paths:
        return None
    from twinprov.validation import ValidationRecord, render_html

    records = [
        ValidationRecord.from_dict(json.loads(p.read_text(encoding="utf-8")))
        for p in paths
        if p.is_file()
    ]
    dest = run_dir(settings.runs_dir, dag_id, run_id) / "validation" / "report.html"
    atomic_write(dest, render_html(records, title=f"Validation of {dag_id} run {run_id}"))
    return str(dest)


def _verdict_stage(
    settings: Settings, rec: RunRecord, tries: list[Any], state: str
) -> dict[str, Any]:
    """Compare a rerun's outputs with the original's (read from its crate); write verdict.json."""
    import json

    from twinprov.app.compare import compare_run
    from twinprov.app.rerun import (
        RerunRefused,
        hand_written,
        resolve_original,
        spec_of,
        task_order,
        workflow_of,
    )
    from twinprov.provenance.env_facts import comparable_facts

    ref = str(rec.info["params"][RERUN_PARAM])
    folder = run_dir(settings.runs_dir, rec.dag_id, rec.run_id) / "reproducibility"
    try:
        original = resolve_original(settings, ref, workflow_of(rec.dag_id))
    except RerunRefused as e:  # another workflow's run: not linked, not even by name
        verdict: dict[str, Any] = Verdict.failed(str(e)).to_dict()
    except TwinprovError as e:
        verdict = Verdict.failed(str(e), original_run=ref).to_dict()
    else:
        outputs: dict[tuple[str, str], tuple[str, Path | None]] = {}
        inputs: dict[str, dict[str, str]] = {}
        notes = []
        spec = None if hand_written(original) else spec_of(original)
        roles = ("step",) if spec is not None else (HAND_WRITTEN_ROLE,)
        facts = {  # what each step ran with, to explain differences (twinprov.provenance.env_facts)
            t.task_id: comparable_facts(t.payload)
            for t in latest_tries(tries)
            if t.payload.get("role") in roles
        }
        code, what = (
            ("spec_sha256", "workflow spec")
            if spec is not None
            else ("dag_file_sha256", "DAG file")
        )
        if rec.info.get(code) and rec.info[code] != original.spec_sha256:
            notes.append(
                f"the rerun ran a {what} that differs from the original's "
                f"(sha256 {str(rec.info[code])[:12]}… vs {original.spec_sha256[:12]}…)"
            )
        for t in latest_tries(tries):
            if t.payload.get("role") not in roles or t.state != "success":
                continue
            for o in t.manifest.get("outputs") or []:
                if o.get("sha256"):
                    where = o.get("abs_path")
                    outputs[(t.task_id, str(o["name"]))] = (
                        str(o["sha256"]),
                        Path(str(where)) if where else None,
                    )
            inputs[t.task_id] = {
                str(i["name"]): str(i["sha256"])
                for i in t.manifest.get("inputs") or []
                if i.get("sha256")
            }
            target, pinned = t.payload.get("target"), t.payload.get("image_pinned")
            if target == "local":
                note = (
                    "steps ran on the local backend: container images were not used; "
                    "the Python environment is recorded instead"
                )
                if note not in notes:
                    notes.append(note)
            elif pinned is False:
                notes.append(
                    f"step {t.task_id}: image {t.payload.get('image')} is not pinned by digest: "
                    "the rerun may have used a different image"
                )
        verdict = compare_run(
            original,
            spec,
            outputs,
            inputs,
            rerun_state=state,
            notes=notes,
            rerun_facts=facts,
            task_order=task_order(rec.info.get("dag_tasks")) if spec is None else None,
        ).to_dict()
    path = atomic_write(folder / "verdict.json", json.dumps(verdict, indent=2, sort_keys=True))
    verdict["file"] = str(path)
    return verdict


def crate_dir(settings: Settings, dag_id: str, run_id: str) -> Path:
    """Folder of a run's RO-Crate."""
    return run_dir(settings.runs_dir, dag_id, run_id) / "crate"


def _spec_of(rec: RunRecord) -> Any:
    from twinprov.provenance.spec import load_spec

    path = rec.info.get("spec_path")
    if not path or not Path(str(path)).is_file():
        return None
    try:
        return load_spec(str(path))
    except TwinprovError:
        return None


@dataclass
class PublishContext:
    """What the stages of one publication share: the run as read once, and what they add."""

    settings: Settings
    rec: RunRecord
    events: list[TaskEvent]
    tries: list[StepTry]
    state: str
    ended: str
    graph: str
    spec: Any
    publication: dict[str, Any] = field(default_factory=dict)
    gaps: dict[str, str] = field(default_factory=dict)
    document: ProvDocument | None = None
    """The run's PROV document, for the stages of :data:`WITH_PROV`."""
    connection: Callable[[str], Any] | None = None
    """Airflow connection lookup (``twinprov.airflow.connections``) for stages that log in."""


@dataclass(frozen=True)
class Stage:
    """One named part of a publication; if it raises, the publication records a gap under its
    name (the reason in one line) and goes on: ``twinprov publish RUN`` fills it in later."""

    name: str
    run: Callable[[PublishContext], None]


def _mlflow_stage(ctx: PublishContext) -> None:
    ctx.publication["mlflow_runs"] = []
    if ctx.spec is None or not any(s.mlflow for s in ctx.spec.steps):
        return
    from twinprov.ro_crates.mlflow_links import find_runs

    uri = ctx.settings.mlflow_tracking_uri
    try:
        ctx.publication["mlflow_runs"] = [r.to_dict() for r in find_runs(uri, ctx.graph)]
    except Exception as e:
        raise PublishError(f"MLflow at {uri} unreachable: {e}") from e


def _rerun_verdict_stage(ctx: PublishContext) -> None:
    ctx.publication["verdict"] = None
    if ctx.rec.params.get(RERUN_PARAM):
        ctx.publication["verdict"] = _verdict_stage(ctx.settings, ctx.rec, ctx.tries, ctx.state)


def _report_stage(ctx: PublishContext) -> None:
    rec = ctx.rec
    report = _validation_report(ctx.settings, rec.dag_id, rec.run_id, ctx.tries)
    if report is not None:
        ctx.publication["validation_report"] = report


def _validations_stage(ctx: PublishContext) -> None:
    ctx.publication["validations"] = [
        {
            "output": v.output,
            "step": v.step,
            "sha256": v.sha256,
            "success": v.success,
            "skipped": v.skipped,
            "report_json": v.report,
            "report_html": ctx.publication.get("validation_report"),
            "suite": v.suite,
        }
        for t in latest_tries(ctx.tries)
        if (v := t.validation) is not None
    ]


def _stac_items_stage(ctx: PublishContext) -> None:
    ctx.publication["stac_items"] = _stac_stage(
        ctx.settings, ctx.spec, ctx.rec, ctx.tries, ctx.ended, ctx.graph
    )


def _crate_stage(ctx: PublishContext) -> None:
    from twinprov.ro_crates.assemble import crate_input_from_ledger
    from twinprov.ro_crates.crate import build_crate

    rec = ctx.rec
    read = (with_fields(rec, ended=ctx.ended, publication=ctx.publication), ctx.events)
    crate = build_crate(
        crate_input_from_ledger(ctx.settings, rec.dag_id, rec.run_id, already_read=read),
        crate_dir(ctx.settings, rec.dag_id, rec.run_id),
        copy_threshold_bytes=ctx.settings.crate_copy_threshold,
    )
    ctx.publication["crate"] = str(crate)


def _mlflow_tags_stage(ctx: PublishContext) -> None:
    runs = ctx.publication.get("mlflow_runs") or []
    if not runs:
        return
    from twinprov.ro_crates.mlflow_links import tag_back

    crate = crate_dir(ctx.settings, ctx.rec.dag_id, ctx.rec.run_id)
    tag_back(
        ctx.settings.mlflow_tracking_uri,
        [m["run_id"] for m in runs],
        crate=str(crate) if crate.is_dir() else None,
        prov_run=ctx.graph,
    )


def _openlineage_stage(ctx: PublishContext) -> None:
    from twinprov.app.lineage import openlineage_stage

    openlineage_stage(ctx)


BEFORE_PROV: tuple[Stage, ...] = (
    Stage("mlflow", _mlflow_stage),
    Stage("verdict", _rerun_verdict_stage),
)
"""Stages whose facts go into the PROV document."""

AFTER_PROV: tuple[Stage, ...] = (
    Stage("validation_report", _report_stage),
    Stage("validations", _validations_stage),
    Stage("stac", _stac_items_stage),
    Stage("crate", _crate_stage),
    Stage("mlflow_tags", _mlflow_tags_stage),
    Stage("openlineage", _openlineage_stage),
)
"""Stages that publish the run elsewhere, after its PROV files and ledger row are written."""


def _yprov_stage(ctx: PublishContext) -> None:
    from twinprov.app.yprov import yprov_stage

    doc = ctx.document
    if doc is not None:
        yprov_stage(ctx, lambda: _serialize(doc, "provjson"), ctx.connection)


WITH_PROV: tuple[Stage, ...] = (Stage("yprov", _yprov_stage),)
"""Stages that send the PROV document elsewhere before its files are written (where the copy
went is then recorded in the document itself)."""


def _run_stages(ctx: PublishContext, stages: Sequence[Stage]) -> None:
    for stage in stages:
        try:
            stage.run(ctx)
        except Exception as e:
            reason = str(e) if isinstance(e, TwinprovError) else f"{type(e).__name__}: {e}"
            ctx.gaps[stage.name] = " ".join(reason.split())
            log.warning("twinprov: publication stage %s not done: %s", stage.name, reason)


def publish_run(
    settings: Settings,
    dag_id: str,
    run_id: str,
    *,
    connection: Callable[[str], Any] | None = None,
    missing: Sequence[str] = (),
) -> Publication:
    """Publish one run: the stages of :data:`BEFORE_PROV`, the PROV files and the ledger row,
    the stages of :data:`AFTER_PROV`, then the graph store.

    Only the PROV files and the ledger are essential; a stage that fails is recorded as a gap of
    the publication (its name, the reason), which ``twinprov publish RUN`` fills in later. A
    graph store that cannot be reached leaves the run pending for it. ``connection`` looks up
    Airflow connections (for yProv; default: Airflow's ``AIRFLOW_CONN_*`` variables).
    ``missing`` names task tries Airflow reports ended whose events the ledger does not hold
    yet (still in another worker's spool, see :mod:`twinprov.app.drain`): the gap ``events``.
    """
    ledger = Ledger(settings.ledger_url)
    ledger.ingest_spool(settings.spool_dir)
    rec = ledger.run(dag_id, run_id)
    if rec is None:
        raise RunNotFoundError(f"no recorded run {dag_id}/{run_id}")
    events = _step_events(ledger.events(dag_id, run_id))
    tries = collapse_tries(events)
    ctx = PublishContext(
        settings=settings,
        rec=rec,
        events=events,
        tries=tries,
        state=run_state(tries),
        ended=datetime.now(UTC).isoformat(),
        graph=Ids(settings.base_iri).run(dag_id, run_id),
        spec=_spec_of(rec),
        connection=connection,
    )
    if missing:
        ctx.gaps["events"] = events_gap(missing)
    _run_stages(ctx, BEFORE_PROV)
    publication = ctx.publication
    facts = RunFacts(
        dag_id,
        run_id,
        rec.info,
        ctx.state,
        ctx.ended,
        publication.get("mlflow_runs") or (),
        publication.get("verdict"),
    )
    doc = build_document(Ids(settings.base_iri), facts, events)
    ctx.document = doc
    _run_stages(ctx, WITH_PROV)
    if copy := publication.get("yprov"):
        add_document_copy(
            doc,
            Ids(settings.base_iri),
            dag_id,
            run_id,
            location=copy["location"],
            pid=copy["pid"],
            parent_pid=copy.get("parent_pid"),
        )
    texts = {PROV_FORMATS[f]: _serialize(doc, f) for f in PROV_FORMATS}
    files = _write_atomically(run_dir(settings.runs_dir, dag_id, run_id) / "prov", texts)
    digest = hashlib.sha256(texts[PROV_FORMATS["provjson"]].encode()).hexdigest()
    publication.update(files=files, graph=ctx.graph)
    ledger.update_run(
        dag_id,
        run_id,
        state=ctx.state,
        ended=ctx.ended,
        published_at=datetime.now(UTC).isoformat(),
        published_digest=digest,
        publication=publication,
    )
    _run_stages(ctx, AFTER_PROV)
    publication["gaps"] = ctx.gaps

    # the rest of the publication goes to the ledger in one transaction with the store's
    # answer (the PROV files and the run's state are there already); a publication cut short
    # before it stays pending (``published_digest`` without ``stored_digest``) and is redone
    triples, err = None, None
    try:
        with open_store(settings) as store:
            triples = store.replace_graph(ctx.graph, texts[PROV_FORMATS["turtle"]])
    except StoreError as e:
        err = str(e)
        log.warning("twinprov: %s; the run stays pending for the graph store", err)
        ledger.update_run(dag_id, run_id, publication=publication)
    except BaseException:
        ledger.update_run(dag_id, run_id, publication=publication)
        raise
    else:
        ledger.update_run(dag_id, run_id, publication=publication, stored_digest=digest)
    return Publication(
        dag_id,
        run_id,
        ctx.state,
        ctx.graph,
        files,
        digest,
        triples,
        err,
        len(tries),
        gaps=ctx.gaps,
        verdict=publication.get("verdict"),
    )


def events_gap(missing: Sequence[str]) -> str:
    """The reason recorded when a run is published without the events of ``missing`` tasks."""
    return (
        f"no events yet of {', '.join(missing)} (ended in Airflow; still in a worker's spool?): "
        "published without them, published again when that worker drains its spool"
    )


CATCH_UP_BATCH_RUNS = 500
"""Runs a catch-up sends to the graph store at once (then marks them stored in one transaction)."""
CATCH_UP_BATCH_BYTES = 8 << 20
"""…or fewer, once their Turtle reaches this size."""


def catch_up(settings: Settings, store: GraphStore) -> int:
    """Load into an open store (:class:`~twinprov.provenance.store.GraphStore`) every published
    run it does not hold yet; returns how many.

    The runs go in batches (:data:`CATCH_UP_BATCH_RUNS`): the store replaces their graphs with
    ``replace_graphs`` (a few requests per batch to a SPARQL server), then one ledger
    transaction marks them stored. A replay of a batch (e.g. after a failure between the two)
    replaces the same graphs again, never adds to them. A run whose Turtle file is gone is left
    pending. A batch the store refuses raises :class:`~twinprov.provenance.errors.StoreError`; the
    batches before it stay stored, the rest stays pending.
    """
    ledger = Ledger(settings.ledger_url)
    loaded = 0
    batch: list[tuple[str, str, str, str, bytes]] = []  # dag, run, digest, graph, Turtle
    size = 0

    def flush() -> None:
        nonlocal loaded, size
        docs = [(graph, data) for _d, _r, _g, graph, data in batch]
        store.replace_graphs(docs)
        ledger.mark_stored([(d, r, digest) for d, r, digest, _g, _t in batch])
        loaded += len(batch)
        batch.clear()
        size = 0

    for dag_id, run_id, digest, publication in ledger.store_pending():
        graph, files = publication.get("graph"), publication.get("files")
        ttl = files.get(PROV_FORMATS["turtle"]) if isinstance(files, dict) else None
        if not isinstance(graph, str) or not graph or not isinstance(ttl, str) or not ttl:
            continue
        try:
            data = Path(ttl).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            continue
        batch.append((dag_id, run_id, digest, graph, data))
        size += len(data)
        if len(batch) >= CATCH_UP_BATCH_RUNS or size >= CATCH_UP_BATCH_BYTES:
            flush()
    if batch:
        flush()
    return loaded


def publish_pending(
    settings: Settings, *, connection: Callable[[str], Any] | None = None
) -> list[Publication]:
    """Publish every run whose ledger has events it has not published (e.g. a killed publish),
    or whose last publication left gaps (e.g. yProv unreachable)."""
    ledger = Ledger(settings.ledger_url)
    ledger.ingest_spool(settings.spool_dir)
    done = []
    for rec in ledger.runs():
        gaps = rec.publication.get("gaps")
        if rec.published_digest and rec.published_digest == rec.stored_digest and not gaps:
            continue
        done.append(publish_run(settings, rec.dag_id, rec.run_id, connection=connection))
    return done


def export_run(settings: Settings, dag_id: str, run_id: str, fmt: str) -> str:
    """The run's PROV document in ``fmt`` (provjson, provn, turtle, jsonld). Reads only."""
    rec = Ledger(settings.ledger_url).run(dag_id, run_id)
    published = rec.publication.get("files", {}) if rec else {}
    pj = Path(published.get(PROV_FORMATS["provjson"], ""))
    if pj.is_file():  # prefer the published document: it carries the run's end time
        doc = ProvDocument.deserialize(source=str(pj), format="json")
    else:
        doc, _state = build_run_document(settings, dag_id, run_id, ingest=False)
    return _serialize(doc, fmt)
