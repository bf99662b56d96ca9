"""What the stack tests compare: the ledger's runs, the graph store's run graphs, the PROV files."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyoxigraph as ox

from tests.stack.services import Stack
from twinprov.provenance.ids import Ids
from twinprov.provenance.ledger import Ledger, RunRecord, TaskEvent
from twinprov.provenance.remote_store import SparqlStore

TP = "urn:twinprov:vocab#"
PROV = "http://www.w3.org/ns/prov#"


def ledger(stack: Stack) -> Ledger:
    return Ledger(stack.ledger_url)


def run_record(stack: Stack, dag_id: str, run_id: str) -> RunRecord:
    rec = ledger(stack).run(dag_id, run_id)
    assert rec is not None, f"run {dag_id}/{run_id} is not in the ledger"
    return rec


def events(stack: Stack, dag_id: str, run_id: str) -> list[TaskEvent]:
    return ledger(stack).events(dag_id, run_id)


def graph_iri(dag_id: str, run_id: str) -> str:
    return Ids("urn:twinprov:").run(dag_id, run_id)


def store(stack: Stack) -> SparqlStore:
    return SparqlStore(stack.sparql_url, stack.sparql_gsp_url, timeout_s=60)


def store_counts(stack: Stack) -> dict[str, int]:
    """Triples per named graph in the Oxigraph server."""
    with store(stack).open() as st:
        res = st.query("SELECT ?g (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } } GROUP BY ?g")
        return {sol["g"].value: int(sol["n"].value) for sol in res}


def store_triples(stack: Stack, graph: str) -> set[tuple[str, str, str]]:
    """A run graph's triples as held by the server (blank nodes as ``_:``)."""
    with store(stack).open() as st:
        res = st.query(f"SELECT ?s ?p ?o WHERE {{ GRAPH <{graph}> {{ ?s ?p ?o }} }}")
        return {(_key(sol["s"]), _key(sol["p"]), _key(sol["o"])) for sol in res}


def _key(term: Any) -> str:
    return "_:" if isinstance(term, ox.BlankNode) else str(term)


def published_turtle(rec: RunRecord) -> Path:
    path = Path(str(rec.publication.get("files", {}).get("prov.ttl", "")))
    assert path.is_file(), f"{rec.dag_id}/{rec.run_id}: no published prov.ttl ({path})"
    return path


def turtle_triples(text: str | bytes) -> set[tuple[str, str, str]]:
    """The triples of a Turtle document as an Oxigraph store holds them (a set, literals in
    Oxigraph's canonical form, e.g. ``xsd:dateTime`` in UTC with ``Z``)."""
    mem = ox.Store()
    mem.load(text, format=ox.RdfFormat.TURTLE)
    return {
        (_key(q.subject), _key(q.predicate), _key(q.object))
        for q in mem.quads_for_pattern(None, None, None)
    }


def subjects_by_type(triples: set[tuple[str, str, str]], rdf_type: str) -> set[str]:
    rdf = "<http://www.w3.org/1999/02/22-rdf-syntax-ns#type>"
    return {s for s, p, o in triples if p == rdf and o == f"<{rdf_type}>"}


def tries_in(triples: set[tuple[str, str, str]]) -> Counter[tuple[str, int]]:
    """(task id, try number) of every task-try activity in a run graph, with multiplicity."""
    tries = subjects_by_type(triples, TP + "TaskTry")
    out: Counter[tuple[str, int]] = Counter()
    for t in tries:
        task = next(o for s, p, o in triples if s == t and p == f"<{TP}taskId>")
        num = next(o for s, p, o in triples if s == t and p == f"<{TP}tryNumber>")
        out[(ox_value(task), int(ox_value(num)))] += 1
    return out


def ox_value(literal: str) -> str:
    """The lexical value of a literal written as N-Triples."""
    return literal.split('"')[1] if literal.startswith('"') else literal


def orphans(triples: set[tuple[str, str, str]], run: str) -> list[str]:
    """Activities and entities of a run graph not connected to its run: task tries that are not
    ``prov:wasInformedBy`` the run, data entities neither generated nor used by an activity of
    the run."""
    informed = {s for s, p, o in triples if p == f"<{PROV}wasInformedBy>" and o == f"<{run}>"}
    lost = [t for t in subjects_by_type(triples, TP + "TaskTry") if t not in informed]
    acts = informed | {f"<{run}>"}
    linked = {s for s, p, o in triples if p == f"<{PROV}wasGeneratedBy>" and o in acts}
    linked |= {o for s, p, o in triples if p == f"<{PROV}used>" and s in acts}
    for e in subjects_by_type(triples, TP + "DataFile"):
        if e not in linked:
            lost.append(e)
    return lost


def assert_fan_runs_complete(
    stack: Stack, dag: str, run_ids: Iterable[str], width: int
) -> tuple[int, int, int]:
    """Every run of a fan dag (``width`` parallel steps, then the publish task) succeeded and is
    complete and separate: its ledger holds exactly ``running`` + ``success`` of each task, try 1
    (nothing lost, nothing twice); its graph in the store equals its published PROV, one activity
    per step, each with its output, linked to the run; no triple of another run. Returns the
    run rows, event rows and triples counted."""
    seeds = list(run_ids)
    led = ledger(stack)
    graphs = {rid: graph_iri(dag, rid) for rid in seeds}
    counts = store_counts(stack)
    triples = {rid: store_triples(stack, g) for rid, g in graphs.items()}
    generated = {
        rid: {s for s, p, o in t if p == f"<{PROV}wasGeneratedBy>"} for rid, t in triples.items()
    }
    events = 0
    for rid in seeds:
        ev = led.events(dag, rid)
        events += len(ev)
        # ledger: running + success for each of the steps and the publish task
        keys = sorted((e.task_id, e.try_number, e.state) for e in ev)
        expected = sorted(
            (t, 1, s)
            for t in [*(f"s{i}" for i in range(1, width + 1)), "publish_provenance"]
            for s in ("running", "success")
        )
        assert keys == expected, rid
        rec = led.run(dag, rid)
        assert rec is not None and rec.state == "success" and rec.stored_digest, rid
        assert rec.published_digest == rec.stored_digest, rid

        mine = triples[rid]
        assert counts[graphs[rid]] == len(mine)
        assert mine == turtle_triples(published_turtle(rec).read_bytes()), rid
        # complete: one try per step, each with its output, all linked to the run
        assert tries_in(mine) == {(f"s{i}", 1): 1 for i in range(1, width + 1)}, rid
        assert len(subjects_by_type(mine, TP + "DataFile")) == width + 1  # + spec
        assert orphans(mine, graphs[rid]) == [], rid
        assert len(generated[rid]) == width, rid
        # separate: nothing of another run (its IRIs, its outputs) in this graph
        text = " ".join(" ".join(t) for t in mine)
        for other, g in graphs.items():
            if other != rid:
                assert g not in text, f"{rid}'s graph mentions run {other}"
                assert not any(e in text for e in generated[other]), (rid, other)
        assert f"<{graphs[rid]}>" in text
    rows_runs = sum(1 for r in led.runs() if r.dag_id == dag and r.run_id in seeds)
    assert rows_runs == len(seeds)
    assert events == len(seeds) * (width + 1) * 2
    return rows_runs, events, sum(len(t) for t in triples.values())
