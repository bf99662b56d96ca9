"""Graph store down for the whole of 20 runs: the runs succeed, nothing is lost, and a catch-up
(``twinprov publish --pending``, and the automatic one before every ``twinprov query``) brings
the Oxigraph server to exactly the ledger's content, run graph by run graph."""

from __future__ import annotations

import json

from tests.stack import checks
from tests.stack.services import Stack

RUNS = 20
DAG = "stack_pair"


def _pending(stack: Stack, run_ids: list[str]) -> list[str]:
    out = []
    for rid in run_ids:
        rec = checks.run_record(stack, DAG, rid)
        if not rec.published_digest or rec.published_digest != rec.stored_digest:
            out.append(rid)
    return out


def _assert_store_matches_ledger(stack: Stack, run_ids: list[str]) -> int:
    """Each run graph in the server holds exactly the triples of the run's published PROV
    (the ledger's publication); returns the number of triples compared."""
    counts = checks.store_counts(stack)
    total = 0
    for rid in run_ids:
        rec = checks.run_record(stack, DAG, rid)
        assert rec.published_digest == rec.stored_digest, f"{rid} still pending"
        graph = rec.publication["graph"]
        expected = checks.turtle_triples(checks.published_turtle(rec).read_bytes())
        assert counts.get(graph) == len(expected), (rid, counts.get(graph), len(expected))
        assert checks.store_triples(stack, graph) == expected, rid
        total += len(expected)
    return total


def _runs_while_store_down(stack: Stack, seeds: range) -> list[str]:
    """Runs (one per seed) made while the Oxigraph server is stopped; all succeeded and are
    pending for the store."""
    stack.stop_oxigraph()
    try:
        run_ids = [stack.trigger(DAG, {"seed": seed}) for seed in seeds]
        states = stack.wait_runs(DAG, run_ids, timeout=600)
    finally:
        stack.start_oxigraph()
    assert set(states.values()) == {"success"}, states
    assert sorted(_pending(stack, run_ids)) == sorted(run_ids)
    return run_ids


def test_store_down_for_20_runs_then_caught_up(stack: Stack) -> None:
    run_ids = _runs_while_store_down(stack, range(100, 100 + RUNS))
    # every run is in the ledger, published to files, and pending for the store
    events = {rid: checks.events(stack, DAG, rid) for rid in run_ids}
    assert all(len(ev) == 6 for ev in events.values()), {r: len(e) for r, e in events.items()}
    pending = _pending(stack, run_ids)
    assert sorted(pending) == sorted(run_ids)
    assert not any(
        g in checks.store_counts(stack) for g in map(checks.graph_iri, [DAG] * RUNS, run_ids)
    )

    # explicit catch-up
    proc = stack.twinprov("publish", "--pending")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _pending(stack, run_ids) == []
    triples = _assert_store_matches_ledger(stack, run_ids)
    # a second catch-up is a no-op, and replays do not duplicate
    again = stack.twinprov("publish", "--pending")
    assert again.returncode == 0 and "nothing pending" in again.stdout, again.stdout
    assert _assert_store_matches_ledger(stack, run_ids) == triples
    print(
        f"\nstore down: {RUNS} runs succeeded, {sum(map(len, events.values()))} ledger events, "
        f"{len(pending)} runs pending; after `twinprov publish --pending`: {RUNS} run graphs, "
        f"{triples} triples, equal to the ledger's PROV per graph; second catch-up: nothing pending"
    )


def test_automatic_catch_up_before_a_query(stack: Stack) -> None:
    run_ids = _runs_while_store_down(stack, range(900, 903))
    graphs = [checks.graph_iri(DAG, r) for r in run_ids]
    values = " ".join(f"<{g}>" for g in graphs)
    query = (
        f"SELECT ?g (COUNT(*) AS ?n) WHERE {{ VALUES ?g {{ {values} }} GRAPH ?g {{ ?s ?p ?o }} }} "
        "GROUP BY ?g"
    )
    proc = stack.twinprov("query", query, "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    answer = {
        b["g"]["value"]: int(b["n"]["value"])
        for b in json.loads(proc.stdout)["results"]["bindings"]
    }
    assert sorted(answer) == sorted(graphs)
    assert _pending(stack, run_ids) == []
    triples = _assert_store_matches_ledger(stack, run_ids)
    print(
        f"\nstore down for 3 more runs; the first `twinprov query` caught up {len(answer)} run "
        f"graphs ({triples} triples) and answered from them"
    )


def test_endpoint_catches_up_the_sparql_server(stack: Stack) -> None:
    """The API server's SPARQL endpoint, forwarding to the Oxigraph server, first loads what
    was published while that server was away (as the embedded store's owner does)."""
    import httpx

    run_ids = _runs_while_store_down(stack, range(950, 952))
    graphs = [checks.graph_iri(DAG, r) for r in run_ids]
    query = "SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } }"
    resp = httpx.post(
        f"{stack.api}/twinprov/sparql",
        data={"query": query},
        headers={
            "Authorization": f"Bearer {stack.token()}",
            "Accept": "application/sparql-results+json",
        },
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    answered = {b["g"]["value"] for b in resp.json()["results"]["bindings"]}
    assert set(graphs) <= answered
    assert _pending(stack, run_ids) == []
    triples = _assert_store_matches_ledger(stack, run_ids)
    print(
        f"\nstore down for 2 more runs; the API server's /twinprov/sparql caught up "
        f"{len(graphs)} run graphs ({triples} triples) before forwarding the query"
    )
