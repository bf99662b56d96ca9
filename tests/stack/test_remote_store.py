"""The SPARQL 1.1 server as graph store (``twinprov.provenance.remote_store``) against a real
``oxigraph
serve``: the same answers as the embedded store, idempotent replacement, clear errors."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pyoxigraph as ox
import pytest

from tests.conftest import fresh_settings
from tests.stack.services import ensure_installed, free_port, oxigraph_binary, wait_until
from twinprov.provenance.errors import QueryError, StoreError
from twinprov.provenance.remote_store import SparqlStore, safe_url
from twinprov.provenance.store import EmbeddedStore, open_store

RUN_A = """@prefix prov: <http://www.w3.org/ns/prov#> .
<urn:twinprov:run/a/1> a prov:Activity ; prov:used <urn:twinprov:data/sha256-aa> , _:b .
_:b <http://www.w3.org/2000/01/rdf-schema#label> "blank" .
<urn:twinprov:data/sha256-aa> <http://www.w3.org/2000/01/rdf-schema#label> "é \\"q\\"" ;
   prov:generatedAtTime "2026-01-01T00:00:00+00:00"^^<http://www.w3.org/2001/XMLSchema#dateTime> .
"""
RUN_B = """<urn:twinprov:run/b/1> a <http://www.w3.org/ns/prov#Activity> ;
   <urn:x:n> 42 , 43 .
"""
QUERIES = [
    "SELECT ?s ?p ?o WHERE { ?s ?p ?o } ORDER BY ?s ?p ?o",
    "SELECT ?g (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } } GROUP BY ?g ORDER BY ?g",
    "SELECT ?x WHERE { OPTIONAL { ?x <urn:none> ?y } }",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ensure_installed()
    binary = oxigraph_binary()
    assert binary is not None
    root = tmp_path_factory.mktemp("oxigraph")
    port = free_port()
    with (root / "log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, "serve", "--location", str(root / "data"), "--bind",
             f"127.0.0.1:{port}", "--union-default-graph"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{base}/query", params={"query": "ASK {}"}).status_code == 200,
            "oxigraph serve",
            30,
        )
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)




def test_open_store_chooses_by_settings(server: str, tmp_path: Path) -> None:
    with open_store(fresh_settings(tmp_path, server)) as st:
        assert isinstance(st, SparqlStore)
    with open_store(fresh_settings(tmp_path)) as st:
        assert isinstance(st, EmbeddedStore)
    half = replace(fresh_settings(tmp_path, server), sparql_gsp_url="")
    with pytest.raises(StoreError, match="missing: sparql_gsp_url"), open_store(half):
        pass


def test_same_answers_as_the_embedded_store(server: str, tmp_path: Path) -> None:
    remote = SparqlStore(f"{server}/query", f"{server}/store")
    with remote.open() as r, EmbeddedStore(tmp_path / "emb").open() as e:
        for g, ttl in (("urn:twinprov:run/a/1", RUN_A), ("urn:twinprov:run/b/1", RUN_B)):
            assert r.replace_graph(g, ttl) == e.replace_graph(g, ttl)
            # a replay replaces, never adds
            assert r.replace_graph(g, ttl) == e.replace_graph(g, ttl) == r.graph_size(g)
        assert r.graphs() == e.graphs() == ["urn:twinprov:run/a/1", "urn:twinprov:run/b/1"]
        for q in QUERIES:
            a, b = r.query(q), e.query(q)
            assert type(a) is type(b) is ox.QuerySolutions
            assert [v.value for v in a.variables] == [v.value for v in b.variables]
            rows_a = [[_k(s[v]) for v in a.variables] for s in a]
            rows_b = [[_k(s[v]) for v in b.variables] for s in b]
            assert rows_a == rows_b, q
        assert type(r.query("ASK { ?s <urn:x:n> 42 }")) is ox.QueryBoolean
        assert bool(r.query("ASK { ?s <urn:x:n> 42 }")) is True
        assert bool(r.query("ASK { ?s <urn:x:n> 7 }")) is False
        c_r, c_e = (x.query("CONSTRUCT WHERE { ?s <urn:x:n> ?o }") for x in (r, e))
        assert type(c_r) is type(c_e) is ox.QueryTriples
        assert sorted(map(str, c_r)) == sorted(map(str, c_e))
        assert r.replace_graph("urn:twinprov:run/b/1", "") == 0
        assert r.graph_size("urn:twinprov:run/b/1") == 0


def _k(term: object) -> str:
    return "_:" if isinstance(term, ox.BlankNode) else str(term)


def test_twinprov_query_over_the_server(server: str, tmp_path: Path) -> None:
    from twinprov.app.query import run_query

    settings = fresh_settings(tmp_path, server)
    with open_store(settings) as st:
        st.replace_graph("urn:twinprov:run/b/1", RUN_B)
    table = run_query(settings, "SELECT DISTINCT ?o WHERE { ?s <urn:x:n> ?o } ORDER BY ?o", "table")
    assert isinstance(table, tuple)
    head, rows = table
    assert head == ["o"] and rows == [["42"], ["43"]]
    out = run_query(settings, "SELECT DISTINCT ?o WHERE { ?s <urn:x:n> ?o } ORDER BY ?o", "csv")
    assert out == "o\r\n42\r\n43\r\n"
    ttl = run_query(settings, "CONSTRUCT WHERE { ?s <urn:x:n> ?o }", "turtle")
    assert "42" in str(ttl)
    with pytest.raises(QueryError, match="malformed SPARQL"):
        run_query(settings, "SELEC nothing", "json")


def test_errors_name_the_cause_and_hide_passwords(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"http://twinprov:s3cret-pw@127.0.0.1:{port}"
    store = SparqlStore(f"{url}/query", f"{url}/store", timeout_s=2)
    with store.open() as st:
        with pytest.raises(StoreError, match="cannot be reached") as err:
            st.replace_graph("urn:twinprov:run/x/1", RUN_B)
        assert "s3cret-pw" not in str(err.value) and "***" in str(err.value)
        with pytest.raises(StoreError, match="not valid Turtle"):
            st.replace_graph("urn:twinprov:run/x/1", "<unclosed")
        with pytest.raises(StoreError, match="is not an IRI"):
            st.replace_graph("not an iri", RUN_B)
    assert "s3cret-pw" not in repr(store)
    assert safe_url("http://u:p@h:1/q") == "http://u:***@h:1/q"
    with pytest.raises(StoreError, match="not open"):
        store.graphs()


RUN_C = '''<urn:twinprov:run/c/1> a <http://www.w3.org/ns/prov#Activity> ;
   <urn:x:note> """two lines .
and a final dot .""" , "tab\\there . " , "<urn:not:an:iri> ." ;
   <urn:x:n> 1.5e0 , "x"@en .
'''


def _graph_triples(store: object, graph: str) -> list[str]:
    res = store.query(  # type: ignore[attr-defined]
        f"SELECT ?s ?p ?o WHERE {{ GRAPH <{graph}> {{ ?s ?p ?o }} }}"
    )
    return sorted(" ".join(_k(sol[v]) for v in ("s", "p", "o")) for sol in res)


def test_replace_graphs_in_bulk_equals_one_put_per_graph(server: str, tmp_path: Path) -> None:
    docs: list[tuple[str, str | bytes]] = [
        ("urn:twinprov:run/a/1", RUN_A),  # blank nodes: a PUT of its own
        ("urn:twinprov:run/b/1", RUN_B.encode()),
        ("urn:twinprov:run/c/1", RUN_C),  # " .\n" in literals: still one triple a line
        ("urn:twinprov:run/e/1", ""),
    ]
    remote = SparqlStore(f"{server}/query", f"{server}/store")
    with remote.open() as r, EmbeddedStore(tmp_path / "emb").open() as e:
        httpx.post(f"{server}/update", data={"update": "CLEAR ALL"}).raise_for_status()
        sent = r.replace_graphs(docs)
        assert r._bulk == f"{server}/update"  # Oxigraph: the bulk path
        assert sent == e.replace_graphs(docs) == 6 + 3 + 6 + 0
        for _replay in range(2):  # a replay replaces, never adds (blank nodes included)
            for g, _ttl in docs:
                assert r.graph_size(g) == e.graph_size(g), g
                assert _graph_triples(r, g) == _graph_triples(e, g), g
            assert r.replace_graphs(docs) == sent
        assert r.graphs() == sorted(g for g, _ in docs)  # the empty one too, as with PUT
        # new content replaces the old (a run published again)
        r.replace_graphs([("urn:twinprov:run/b/1", RUN_A.replace("run/a/", "run/b/"))])
        r.replace_graphs([("urn:twinprov:run/c/1", RUN_B)])
        assert r.graph_size("urn:twinprov:run/b/1") == 6
        assert _graph_triples(r, "urn:twinprov:run/c/1") == _graph_triples(
            e, "urn:twinprov:run/b/1"
        )
        # one document that does not parse: nothing of the call is sent
        with pytest.raises(StoreError, match=r"<urn:twinprov:run/f/1> is not valid Turtle"):
            r.replace_graphs([("urn:twinprov:run/g/1", RUN_B), ("urn:twinprov:run/f/1", "<x")])
        assert "urn:twinprov:run/g/1" not in r.graphs()
        with pytest.raises(StoreError, match="is not an IRI"):
            r.replace_graphs([("not an iri", RUN_B)])
        total = sum(r.graph_size(g) for g in r.graphs())
        assert total == len(list(r.query("SELECT * WHERE { GRAPH ?g { ?s ?p ?o } }")))


def test_replace_graphs_elsewhere_is_one_put_per_graph(server: str) -> None:
    remote = SparqlStore(f"{server}/query", f"{server}/store")
    with remote.open() as r:
        r._bulk = ""  # as for a server that is not Oxigraph
        r.replace_graphs([("urn:twinprov:run/h/1", RUN_B), ("urn:twinprov:run/i/1", RUN_C)])
        r.replace_graphs([("urn:twinprov:run/h/1", RUN_B)])
        assert r.graph_size("urn:twinprov:run/h/1") == 3
        assert r.graph_size("urn:twinprov:run/i/1") == 6
    # endpoints that are not Oxigraph's layout: never the bulk path
    other = SparqlStore(f"{server}/query", f"{server}/store/data")
    with other.open() as o:
        assert o._bulk_update_url() is None


def test_catch_up_into_the_server(server: str, tmp_path: Path) -> None:
    from twinprov.app.publish import catch_up
    from twinprov.provenance.ledger import Ledger

    settings = fresh_settings(tmp_path, server)
    ledger = Ledger(settings.ledger_url)
    graphs = {}
    for i, ttl in enumerate([RUN_A, RUN_B, RUN_C] * 3):
        path = tmp_path / f"{i}.ttl"
        path.write_text(ttl.replace("/1>", f"/x{i}>"), encoding="utf-8")
        graph = f"urn:twinprov:run/cu/{i}"
        ledger.ensure_run("cu", str(i), {})
        ledger.update_run(
            "cu",
            str(i),
            published_digest=f"d{i}",
            publication={"files": {"prov.ttl": str(path)}, "graph": graph},
        )
        graphs[graph] = len(set(ox.parse(path.read_bytes(), format=ox.RdfFormat.TURTLE)))
    for _replay in range(2):
        with open_store(settings) as st:
            assert catch_up(settings, st) == 9
            assert {g: st.graph_size(g) for g in graphs} == graphs
        assert all(r.stored_digest == r.published_digest for r in ledger.runs())
        ledger.mark_stored([("cu", str(i), "stale") for i in range(9)])


def test_replace_graphs_in_parallel_parts(server: str) -> None:
    docs: list[tuple[str, str | bytes]] = [
        (f"urn:twinprov:run/p/{i}", (RUN_A, RUN_B, RUN_C)[i % 3].replace("/1>", f"/p{i}>"))
        for i in range(150)
    ]
    remote = SparqlStore(f"{server}/query", f"{server}/store", parallel=2)
    with remote.open() as r:
        for _replay in range(2):
            assert r.replace_graphs(docs) == 50 * (6 + 3 + 6)
            sizes = {g: r.graph_size(g) for g, _ in docs}
            assert sizes == {g: (6, 3, 6)[i % 3] for i, (g, _) in enumerate(docs)}
        # a bad document late in the call: its part is not sent
        bad = [(f"urn:twinprov:run/q/{i}", RUN_B) for i in range(100)] + [
            ("urn:twinprov:run/q/bad", "<x")
        ]
        with pytest.raises(StoreError, match="not valid Turtle"):
            r.replace_graphs(bad)
        stored = [g for g in r.graphs() if g.startswith("urn:twinprov:run/q/")]
        assert len(stored) in (0, 51)  # the first part, or nothing (never part of a part)
