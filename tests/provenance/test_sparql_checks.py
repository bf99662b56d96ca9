"""The SPARQL endpoint's core, without a server: checking queries, choosing the dataset, writing
answers within the limits (HTTP content negotiation is tested in tests/endpoint)."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from typing import Any

import pyoxigraph as ox
import pytest
import rdflib
from rdflib.query import Result

from twinprov.provenance.errors import QueryError
from twinprov.provenance.sparql_check import (
    Kind,
    MalformedQueryError,
    ReadOnlyError,
    ServiceRefusedError,
    check_query,
    explain_syntax_error,
)
from twinprov.provenance.sparql_dataset import (
    EMPTY_GRAPH,
    choose_dataset,
    protocol_params,
    query_options,
)
from twinprov.provenance.sparql_results import ChooseFormat, render

RESULTS = {
    "json": ox.QueryResultsFormat.JSON,
    "xml": ox.QueryResultsFormat.XML,
    "csv": ox.QueryResultsFormat.CSV,
    "tsv": ox.QueryResultsFormat.TSV,
}
GRAPHS = {
    "turtle": ox.RdfFormat.TURTLE,
    "ntriples": ox.RdfFormat.N_TRIPLES,
    "jsonld": ox.RdfFormat.JSON_LD,
}


@dataclass(frozen=True)
class _Format:
    ox_format: Any

    @property
    def media_type(self) -> str:
        return str(self.ox_format.media_type)


def _in(name: str) -> ChooseFormat:
    """Answer in the format called ``name``; no format of the other kind."""

    def choose(kind: Kind) -> _Format:
        table = RESULTS if kind == "results" else GRAPHS
        if name not in table:
            raise QueryError(f"no {kind} format {name}")
        return _Format(table[name])

    return choose


@pytest.fixture
def store() -> ox.Store:
    s = ox.Store()
    for g in ("urn:g:a", "urn:g:b"):
        for i in range(30):
            s.add(
                ox.Quad(
                    ox.NamedNode(f"urn:s:{i}"),
                    ox.NamedNode("urn:p"),
                    ox.Literal(f'{g} #{i}\nsecond line\t"quoted"', language="en"),
                    ox.NamedNode(g),
                )
            )
        s.add(ox.Quad(ox.BlankNode(), ox.NamedNode("urn:q"), ox.NamedNode(g), ox.NamedNode(g)))
    return s


@pytest.mark.parametrize(
    "text",
    [
        "INSERT DATA { <urn:a> <urn:b> <urn:c> }",
        "DELETE WHERE { ?s ?p ?o }",
        "LOAD <http://example.org/data.ttl>",
        "CLEAR ALL",
        "DROP GRAPH <urn:g:a>",
        "CREATE GRAPH <urn:g:new>",
        "COPY <urn:g:a> TO <urn:g:b>",
        "WITH <urn:g:a> DELETE { ?s ?p ?o } WHERE { ?s ?p ?o }",
        "PREFIX ex: <http://example.org/> INSERT { ex:a ex:b ?o } WHERE { ?s ?p ?o }",
    ],
)
def test_updates_are_refused_as_read_only(text: str, store: ox.Store) -> None:
    with pytest.raises(ReadOnlyError, match="read-only"):
        checked = check_query(text)
        try:
            store.query(checked.text)  # a fast-path text reaches Oxigraph's parser, which refuses
        except SyntaxError as e:
            raise explain_syntax_error(text, str(e)) from e


@pytest.mark.parametrize(
    "text",
    [
        "SELECT * WHERE { SERVICE <http://127.0.0.1:9/sparql> { ?s ?p ?o } }",
        "SELECT * { ?x ?y ?z OPTIONAL { SERVICE SILENT <http://127.0.0.1:9/> { ?s ?p ?o } } }",
        "ASK { service ?endpoint { ?s ?p ?o } }",
        "CONSTRUCT { ?s ?p ?o } WHERE { { SELECT * WHERE { SERVICE <urn:x> { ?s ?p ?o } } } }",
        "SELECT * WHERE { \\u0053ERVICE <http://127.0.0.1:9/> { ?s ?p ?o } }",
    ],
)
def test_service_is_refused(text: str) -> None:
    with pytest.raises(ServiceRefusedError, match="no outbound requests"):
        check_query(text)


def test_the_word_service_elsewhere_is_fine() -> None:
    q = check_query('SELECT ?s WHERE { ?s <urn:p> "customer service" }')
    assert q.form == "SELECT" and q.kind == "results"


def test_malformed_query_carries_the_parser_message() -> None:
    with pytest.raises(MalformedQueryError, match="malformed SPARQL query: .*Expected"):
        check_query("SELECT ?x FROM WHERE { ?x }")
    with pytest.raises(MalformedQueryError, match="empty"):
        check_query("   ")
    with pytest.raises(MalformedQueryError, match="levels deep"):
        check_query("SELECT * WHERE " + "{" * 5000 + "}" * 5000)  # would crash Oxigraph's parser
    with pytest.raises(MalformedQueryError, match="at most 100"):
        check_query("SELECT * WHERE { ?s ?p ?o } " + "#" * 200, max_chars=100)
    with pytest.raises(MalformedQueryError, match="prefix operators"):  # crashed Oxigraph
        check_query("SELECT * WHERE { ?s ?p ?o FILTER(" + "! " * 30000 + "true) }")
    assert check_query("SELECT * WHERE { ?s ?p ?o FILTER(!!true) }").form is None


def test_fast_path_leaves_parsing_to_oxigraph_and_dataset_clauses_are_read() -> None:
    assert check_query("SELECT ?s WHERE { ?s ?p ?o }").form is None
    assert check_query("SELECT ?s WHERE { ?s ?p ?o }", parse=True).form == "SELECT"
    # wasDerivedFrom is not the FROM keyword
    assert check_query("SELECT * { ?a <urn:wasDerivedFrom> ?b }").form is None
    q = check_query(
        "BASE <http://ex.org/> PREFIX g: <urn:g:> "
        "DESCRIBE ?s FROM <rel> FROM g:a FROM NAMED g:b WHERE { ?s ?p ?o }"
    )
    assert (q.form, q.kind) == ("DESCRIBE", "graph")
    assert q.from_graphs == ("http://ex.org/rel", "urn:g:a")
    assert q.from_named == ("urn:g:b",)


def test_dataset_rules() -> None:
    plain = check_query("SELECT * WHERE { ?s ?p ?o }")
    assert choose_dataset(plain).union
    allowed = frozenset({"urn:g:a"})
    c = choose_dataset(plain, permitted=allowed)
    assert (c.union, c.default, c.named) == (False, ("urn:g:a",), ("urn:g:a",))
    # protocol parameters win over FROM; graphs the user may not read disappear
    from_b = check_query("SELECT * FROM <urn:g:b> WHERE { ?s ?p ?o }")
    c = choose_dataset(from_b, ("urn:g:a", "urn:g:b"), (), permitted=allowed)
    assert (c.default, c.named) == (("urn:g:a",), ())
    c = choose_dataset(from_b, permitted=allowed)
    assert (c.default, c.named) == ((), ())
    assert protocol_params(c) == [
        ("default-graph-uri", EMPTY_GRAPH),
        ("named-graph-uri", EMPTY_GRAPH),
    ]
    assert query_options(c) == {"default_graph": [], "named_graphs": []}
    with pytest.raises(MalformedQueryError, match="not an absolute IRI"):
        choose_dataset(plain, ("not an iri",))


def test_dataset_is_enforced_by_oxigraph(store: ox.Store) -> None:
    q = "SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } }"
    c = choose_dataset(check_query(q), permitted=frozenset({"urn:g:b"}))
    got = [s["g"].value for s in store.query(q, **query_options(c))]
    assert got == ["urn:g:b"]
    q = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"
    c = choose_dataset(check_query(q), permitted=frozenset({"urn:g:b"}))
    assert next(iter(store.query(q, **query_options(c))))["n"].value == "31"


def _bindings(body: bytes, fmt: str) -> list[dict[str, str]]:
    res = Result.parse(io.BytesIO(body), format=fmt)
    return [{str(k): str(v) for k, v in row.asdict().items()} for row in res]


@pytest.mark.parametrize("fmt", ["json", "xml", "csv", "tsv"])
def test_render_round_trips_every_results_format(store: ox.Store, fmt: str) -> None:
    q = "SELECT ?s ?o ?g WHERE { GRAPH ?g { ?s <urn:p> ?o } } ORDER BY ?g ?s"
    full = render(store.query(q), choose=_in(fmt), row_cap=1000, deadline=None)
    direct = store.query(q).serialize(format=RESULTS[fmt])
    assert full.body == direct and full.cut is None and full.rows == 60
    parsed = _bindings(full.body, fmt)
    assert len(parsed) == 60 and "second line" in parsed[0]["o"]


def test_render_cuts_at_the_row_cap(store: ox.Store) -> None:
    q = "SELECT ?s ?o WHERE { GRAPH ?g { ?s <urn:p> ?o } } ORDER BY ?g ?s"
    cut = render(store.query(q), choose=_in("json"), row_cap=7, deadline=None)
    assert (cut.rows, cut.cut) == (7, "row-cap")
    data = json.loads(cut.body)
    expected = json.loads(store.query(q).serialize(format=ox.QueryResultsFormat.JSON))
    assert data["results"]["bindings"] == expected["results"]["bindings"][:7]
    exact = render(store.query(q), choose=_in("json"), row_cap=60, deadline=None)
    assert (exact.rows, exact.cut) == (60, None)


def test_render_graphs_and_booleans(store: ox.Store) -> None:
    q = "CONSTRUCT { ?s ?p ?o } WHERE { GRAPH ?g { ?s ?p ?o } }"
    for fmt, rdf in (("turtle", "turtle"), ("ntriples", "nt"), ("jsonld", "json-ld")):
        r = render(store.query(q), choose=_in(fmt), row_cap=1000, deadline=None)
        assert len(rdflib.Graph().parse(data=r.body, format=rdf)) == 62 == r.rows
    r = render(store.query(q), choose=_in("turtle"), row_cap=10, deadline=None)
    assert (r.rows, r.cut, len(rdflib.Graph().parse(data=r.body, format="turtle"))) == (
        10,
        "row-cap",
        10,
    )
    yes = render(store.query("ASK { ?s ?p ?o }"), choose=_in("xml"), row_cap=1, deadline=0)
    assert Result.parse(io.BytesIO(yes.body), format="xml").askAnswer is False  # default graph
    with pytest.raises(QueryError, match="no results format turtle"):
        render(store.query("ASK {}"), choose=_in("turtle"), row_cap=1, deadline=None)


def test_render_stops_at_the_deadline(store: ox.Store) -> None:
    q = "SELECT * WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }"  # 62^4 rows, lazily
    started = time.monotonic()
    r = render(
        store.query(q, use_default_graph_as_union=True),
        choose=_in("tsv"),
        row_cap=10**9,
        deadline=started + 0.5,
    )
    assert r.cut == "time-limit" and r.rows and time.monotonic() - started < 5
    rows = ox.parse_query_results(r.body, format=ox.QueryResultsFormat.TSV)
    assert sum(1 for _ in rows) == r.rows
