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
    "publish_pending",
    "publish_run",
]

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prov.model import ProvDocument

from provenance.config import Settings
from provenance.errors import PublishError, RunNotFoundError, StoreError
from provenance.ids import Ids
from provenance.ledger import Ledger, TaskEvent
from provenance.prov_model import RunFacts, build_document, collapse_tries, run_state
from provenance.store import EmbeddedStore
from provenance.workspace import run_dir

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
    extra: dict[str, str] = field(default_factory=dict)


def _step_events(events: list[TaskEvent]) -> list[TaskEvent]:
    return [e for e in events if e.payload.get("role") != PUBLISH_ROLE]


def _serialize(doc: ProvDocument, fmt: str) -> str:
    if fmt == "provjson":
        return str(doc.serialize(format="json", indent=2))
    if fmt == "provn":
        return doc.get_provn()
    if fmt == "turtle":
        return str(doc.serialize(format="rdf", rdf_format="turtle"))
    if fmt == "jsonld":
        return str(doc.serialize(format="rdf", rdf_format="json-ld"))
    raise PublishError(f"unknown PROV format '{fmt}' (choose provjson, provn, turtle or jsonld)")


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


def build_run_document(settings: Settings, dag_id: str, run_id: str) -> tuple[ProvDocument, str]:
    """The run's PROV document as the ledger has it now, and the run state it implies."""
    ledger = Ledger(settings.ledger_url)
    ledger.ingest_spool(settings.spool_dir)
    rec = ledger.run(dag_id, run_id)
    if rec is None:
        raise RunNotFoundError(f"no recorded run {dag_id}/{run_id}")
    events = _step_events(ledger.events(dag_id, run_id))
    state = run_state(collapse_tries(events))
    end = rec.ended if rec.state == state and rec.ended else None
    facts = RunFacts(dag_id, run_id, rec.info, state, end)
    return build_document(Ids(settings.base_iri), facts, events), state


def publish_run(settings: Settings, dag_id: str, run_id: str) -> Publication:
    """Publish one run: PROV files under the run folder, the ledger updated, the store loaded."""
    ledger = Ledger(settings.ledger_url)
    ledger.ingest_spool(settings.spool_dir)
    rec = ledger.run(dag_id, run_id)
    if rec is None:
        raise RunNotFoundError(f"no recorded run {dag_id}/{run_id}")
    events = _step_events(ledger.events(dag_id, run_id))
    tries = collapse_tries(events)
    state = run_state(tries)
    ended = datetime.now(UTC).isoformat()
    doc = build_document(
        Ids(settings.base_iri), RunFacts(dag_id, run_id, rec.info, state, ended), events
    )
    texts = {PROV_FORMATS[f]: _serialize(doc, f) for f in PROV_FORMATS}
    files = _write_atomically(run_dir(settings.runs_dir, dag_id, run_id) / "prov", texts)
    digest = hashlib.sha256(texts[PROV_FORMATS["provjson"]].encode()).hexdigest()
    graph = Ids(settings.base_iri).run(dag_id, run_id)
    publication = {"files": files, "graph": graph}
    ledger.update_run(
        dag_id,
        run_id,
        state=state,
        ended=ended,
        published_at=datetime.now(UTC).isoformat(),
        published_digest=digest,
        publication=publication,
    )
    triples, err = None, None
    try:
        with EmbeddedStore(settings.store_path).open() as store:
            triples = store.replace_graph(graph, texts[PROV_FORMATS["turtle"]])
        ledger.update_run(dag_id, run_id, stored_digest=digest)
    except StoreError as e:
        err = str(e)
        log.warning("twinprov: %s; the run stays pending for the graph store", err)
    return Publication(dag_id, run_id, state, graph, files, digest, triples, err, len(tries))


def catch_up(settings: Settings, store: EmbeddedStore) -> int:
    """Load into an open store every published run it does not hold yet; returns how many."""
    ledger = Ledger(settings.ledger_url)
    loaded = 0
    for rec in ledger.runs():
        if not rec.published_digest or rec.published_digest == rec.stored_digest:
            continue
        ttl = Path(rec.publication.get("files", {}).get(PROV_FORMATS["turtle"], ""))
        if not ttl.is_file():
            continue
        store.replace_graph(rec.publication["graph"], ttl.read_text(encoding="utf-8"))
        ledger.update_run(rec.dag_id, rec.run_id, stored_digest=rec.published_digest)
        loaded += 1
    return loaded


def publish_pending(settings: Settings) -> list[Publication]:
    """Publish every run whose ledger has events it has not published (e.g. a killed publish)."""
    ledger = Ledger(settings.ledger_url)
    ledger.ingest_spool(settings.spool_dir)
    done = []
    for rec in ledger.runs():
        if rec.published_digest and rec.published_digest == rec.stored_digest:
            continue
        done.append(publish_run(settings, rec.dag_id, rec.run_id))
    return done


def export_run(settings: Settings, dag_id: str, run_id: str, fmt: str) -> str:
    """The run's PROV document in ``fmt`` (provjson, provn, turtle, jsonld)."""
    doc, _state = build_run_document(settings, dag_id, run_id)
    rec = Ledger(settings.ledger_url).run(dag_id, run_id)
    published = rec.publication.get("files", {}) if rec else {}
    pj = Path(published.get(PROV_FORMATS["provjson"], ""))
    if pj.is_file():  # prefer the published document: it carries the run's end time
        doc = ProvDocument.deserialize(source=str(pj), format="json")
    return _serialize(doc, fmt)
