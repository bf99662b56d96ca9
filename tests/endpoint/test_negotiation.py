"""HTTP content negotiation of the SPARQL endpoint (Accept header / format parameter → the
answer's format and media type); needs no server."""

from __future__ import annotations

import pyoxigraph as ox
import pytest
import rdflib

from twinprov.airflow.negotiation import Negotiation, NotAcceptableError, negotiate
from twinprov.provenance.sparql_results import render


@pytest.mark.parametrize(
    ("kind", "accept", "fmt", "expected"),
    [
        ("results", None, None, "application/sparql-results+json"),
        ("results", "*/*", None, "application/sparql-results+json"),
        (
            "results",
            "text/html,application/xhtml+xml,*/*;q=0.8",
            None,
            "application/sparql-results+json",
        ),
        ("results", "application/sparql-results+xml", None, "application/sparql-results+xml"),
        ("results", "text/csv;q=0.5, text/tab-separated-values", None, "text/tab-separated-values"),
        ("results", "application/json", None, "application/sparql-results+json"),
        ("results", "text/*", None, "text/csv"),
        ("results", "text/csv", "xml", "application/sparql-results+xml"),
        ("graph", None, None, "text/turtle"),
        ("graph", "application/ld+json", None, "application/ld+json"),
        ("graph", "application/n-triples, text/turtle;q=0.9", None, "application/n-triples"),
        ("graph", "application/turtle,text/turtle", None, "text/turtle"),
        ("graph", None, "json", "application/ld+json"),
        ("graph", None, "nt", "application/n-triples"),
    ],
)
def test_negotiation(kind: str, accept: str | None, fmt: str | None, expected: str) -> None:
    assert negotiate(kind, accept, fmt).media_type == expected  # type: ignore[arg-type]


def test_not_acceptable() -> None:
    with pytest.raises(NotAcceptableError, match="text/turtle"):
        negotiate("graph", "text/csv", None)
    with pytest.raises(NotAcceptableError):
        negotiate("results", "text/turtle;q=1, */*;q=0", None)
    with pytest.raises(NotAcceptableError, match="format 'csv'"):
        negotiate("graph", None, "csv")


def test_render_answers_in_the_negotiated_format() -> None:
    store = ox.Store()
    store.add(ox.Quad(ox.NamedNode("urn:s"), ox.NamedNode("urn:p"), ox.Literal("o")))
    q = "CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }"
    r = render(store.query(q), choose=Negotiation("text/turtle").choose, row_cap=10, deadline=None)
    assert r.media_type == "text/turtle" and r.rows == 1
    assert len(rdflib.Graph().parse(data=r.body, format="turtle")) == 1
    r = render(
        store.query("ASK {}"), choose=Negotiation(fmt="xml").choose, row_cap=1, deadline=None
    )
    assert r.media_type == "application/sparql-results+xml" and r.form == "ASK"
    with pytest.raises(NotAcceptableError):
        render(
            store.query("ASK {}"),
            choose=Negotiation("text/turtle").choose,
            row_cap=1,
            deadline=None,
        )


def test_core_and_store_owner_import_without_airflow() -> None:
    from tests.conftest import run_without_airflow

    out = run_without_airflow(
        """
        import pyoxigraph as ox
        from twinprov.provenance.sparql_check import check_query
        from twinprov.provenance.sparql_results import render
        import twinprov.airflow.graph_worker, twinprov.airflow.forward, twinprov.airflow.picture
        from twinprov.airflow.negotiation import Negotiation
        q = check_query("SELECT ?s WHERE { ?s ?p ?o }", parse=True)
        choose = Negotiation(fmt="csv").choose
        r = render(ox.Store().query(q.text), choose=choose, row_cap=5, deadline=None)
        print("ok", r.media_type, r.body)
        """
    )
    assert out.stdout.startswith("ok text/csv")
