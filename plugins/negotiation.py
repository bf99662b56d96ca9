"""HTTP content negotiation of the SPARQL endpoint: the ``Accept`` header or the ``format``
parameter → the serialization and media type of the answer. The answer itself is written by
:func:`twinprov.provenance.sparql_results.render`, which asks :meth:`Negotiation.choose` for the
format once it knows the kind of answer (the query form is not always known before it runs).

SELECT/ASK answer as SPARQL Results JSON, XML, CSV or TSV; CONSTRUCT/DESCRIBE as Turtle,
N-Triples, JSON-LD or RDF/XML, in that order of preference. No Airflow, no web framework: the
store owner process uses it too.
"""

from __future__ import annotations

__all__ = [
    "GRAPH_FORMATS",
    "RESULT_FORMATS",
    "AnswerFormat",
    "Negotiation",
    "NotAcceptableError",
    "negotiate",
]

from dataclasses import dataclass
from typing import Any

import pyoxigraph as ox

from twinprov.provenance.errors import QueryError
from twinprov.provenance.sparql_check import Kind


class NotAcceptableError(QueryError):
    """No result format the client accepts fits the query form (HTTP 406)."""


@dataclass(frozen=True)
class AnswerFormat:
    """One serialization the endpoint can answer in."""

    name: str
    media_type: str
    kind: Kind
    ox_format: Any


RESULT_FORMATS: tuple[AnswerFormat, ...] = (
    AnswerFormat("json", "application/sparql-results+json", "results", ox.QueryResultsFormat.JSON),
    AnswerFormat("xml", "application/sparql-results+xml", "results", ox.QueryResultsFormat.XML),
    AnswerFormat("csv", "text/csv", "results", ox.QueryResultsFormat.CSV),
    AnswerFormat("tsv", "text/tab-separated-values", "results", ox.QueryResultsFormat.TSV),
)
"""SELECT and ASK answers, in the order the endpoint prefers them."""

GRAPH_FORMATS: tuple[AnswerFormat, ...] = (
    AnswerFormat("turtle", "text/turtle", "graph", ox.RdfFormat.TURTLE),
    AnswerFormat("ntriples", "application/n-triples", "graph", ox.RdfFormat.N_TRIPLES),
    AnswerFormat("jsonld", "application/ld+json", "graph", ox.RdfFormat.JSON_LD),
    AnswerFormat("rdfxml", "application/rdf+xml", "graph", ox.RdfFormat.RDF_XML),
)
"""CONSTRUCT and DESCRIBE answers, in the order the endpoint prefers them."""

_ALIASES: dict[Kind, dict[str, str]] = {
    "results": {
        "application/json": "json",
        "application/xml": "xml",
        "text/xml": "xml",
        "application/sparql-results+tsv": "tsv",
    },
    "graph": {
        "application/x-turtle": "turtle",
        "application/turtle": "turtle",
        "text/plain": "ntriples",
        "application/json": "jsonld",
        "application/xml": "rdfxml",
        "text/xml": "rdfxml",
    },
}
_NAME_ALIASES: dict[Kind, dict[str, str]] = {
    "results": {"srj": "json", "srx": "xml"},
    "graph": {
        "ttl": "turtle",
        "nt": "ntriples",
        "n-triples": "ntriples",
        "json-ld": "jsonld",
        "json": "jsonld",
        "xml": "rdfxml",
        "rdf": "rdfxml",
    },
}


def _formats(kind: Kind) -> tuple[AnswerFormat, ...]:
    return RESULT_FORMATS if kind == "results" else GRAPH_FORMATS


def _by_name(kind: Kind, name: str) -> AnswerFormat | None:
    name = name.strip().lower()
    name = _NAME_ALIASES[kind].get(name, name)
    name = _ALIASES[kind].get(name, name)
    for f in _formats(kind):
        if name in (f.name, f.media_type):
            return f
    return None


def _accept_ranges(accept: str) -> list[tuple[str, float, int]]:
    ranges = []
    for i, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        q = 1.0
        for p in params:
            key, _, value = p.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((media.lower(), q, i))
    return ranges


def negotiate(kind: Kind, accept: str | None, fmt: str | None = None) -> AnswerFormat:
    """The format to answer in: ``fmt`` (a short name such as ``json``/``turtle`` or a media type)
    if given, else the best match for the ``Accept`` header, else the endpoint's default.

    Raises:
        NotAcceptableError: nothing acceptable fits ``kind`` (``results`` for SELECT/ASK,
            ``graph`` for CONSTRUCT/DESCRIBE).
    """
    offered = ", ".join(f.media_type for f in _formats(kind))
    if fmt:
        chosen = _by_name(kind, fmt)
        if chosen is None:
            raise NotAcceptableError(
                f"format '{fmt}' cannot hold this query's answer; use one of: {offered}"
            )
        return chosen
    if not accept or not accept.strip():
        return _formats(kind)[0]
    ranges = _accept_ranges(accept)
    best: tuple[tuple[float, int, int, int], AnswerFormat] | None = None
    for server_rank, f in enumerate(_formats(kind)):
        names = {f.media_type} | {m for m, n in _ALIASES[kind].items() if n == f.name}
        match: tuple[float, int, int] | None = None
        for media, q, client_rank in ranges:
            if media in names:
                spec = 2
            elif media.endswith("/*") and f.media_type.startswith(media[:-1]):
                spec = 1
            elif media == "*/*":
                spec = 0
            else:
                continue
            if match is None or spec > match[1]:
                match = (q, spec, client_rank)
        if match is None or match[0] <= 0:
            continue
        key = (match[0], match[1], -match[2], -server_rank)
        if best is None or key > best[0]:
            best = (key, f)
    if best is None:
        raise NotAcceptableError(
            f"none of the accepted types ({accept}) can hold this query's answer; "
            f"use one of: {offered}"
        )
    return best[1]


@dataclass(frozen=True)
class Negotiation:
    """What the client asked for (``Accept`` header, ``format`` parameter); :meth:`choose` is the
    ``choose`` argument of :func:`~twinprov.provenance.sparql_results.render`."""

    accept: str | None = None
    fmt: str | None = None

    def choose(self, kind: Kind) -> AnswerFormat:
        """:func:`negotiate` for ``kind``."""
        return negotiate(kind, self.accept, self.fmt)
