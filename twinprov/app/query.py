"""SPARQL over every run: the embedded store, caught up from the ledger before answering."""

from __future__ import annotations

__all__ = ["run_query"]

from typing import Any

import pyoxigraph as ox

from twinprov.app.publish import catch_up
from twinprov.provenance.config import Settings
from twinprov.provenance.store import open_store

_RESULT_FORMATS = {
    "json": ox.QueryResultsFormat.JSON,
    "csv": ox.QueryResultsFormat.CSV,
    "tsv": ox.QueryResultsFormat.TSV,
    "xml": ox.QueryResultsFormat.XML,
}
_GRAPH_FORMATS = {"json": ox.RdfFormat.JSON_LD, "xml": ox.RdfFormat.RDF_XML}


def _term(t: Any) -> str:
    if t is None:
        return ""
    return str(t.value) if hasattr(t, "value") else str(t)


def run_query(
    settings: Settings, sparql: str, fmt: str = "json"
) -> str | tuple[list[str], list[list[str]]]:
    """Answer ``sparql``; ``fmt`` json/csv/tsv/xml gives the standard serialization, ``table``
    gives ``(header, rows)`` for display."""
    with open_store(settings) as store:
        catch_up(settings, store)
        result = store.query(sparql)
        if isinstance(result, ox.QuerySolutions):
            if fmt == "table":
                head = [v.value for v in result.variables]
                return head, [[_term(sol[v]) for v in head] for sol in result]
            return bytes(result.serialize(format=_RESULT_FORMATS[fmt]) or b"").decode()
        if isinstance(result, ox.QueryBoolean):
            if fmt == "table":
                return ["answer"], [[str(bool(result)).lower()]]
            return bytes(result.serialize(format=_RESULT_FORMATS[fmt]) or b"").decode()
        rdf = _GRAPH_FORMATS.get(fmt, ox.RdfFormat.TURTLE)
        return bytes(result.serialize(format=rdf) or b"").decode()
