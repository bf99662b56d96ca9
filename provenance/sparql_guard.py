"""Read-only SPARQL with limits: check a query before it runs, answer it within a row cap and a
time limit, and say where the answer was cut.

This is the part of the SPARQL endpoint that needs no web framework and no Airflow (the endpoint in
``plugins/`` handles HTTP and authentication, then calls these functions; the values of the limits
come from it as arguments).

Checking (:func:`check_query`):

* A query that mentions none of ``SERVICE``, ``FROM`` or a ``\\u`` escape cannot hold a federated
  ``SERVICE`` pattern nor a dataset clause, so it goes straight to Oxigraph, whose own parser
  rejects anything that is not a query (updates included) before any data is read.
* Any other query is parsed with rdflib's SPARQL 1.1 parser (which also expands ``\\u`` escapes):
  a ``SERVICE`` pattern anywhere is refused, ``FROM`` / ``FROM NAMED`` graphs are read out so the
  caller can restrict them to the graphs the user may read, and the query form is known.
* A text that is an update (``INSERT``, ``DELETE``, ``LOAD``, ``CLEAR``, ``DROP``…) is refused as
  such, with a message saying the endpoint is read-only; any other malformed text is refused with
  the parser's message.

Answering (:func:`render`): results are streamed through pyoxigraph's TSV (solutions) or
N-Triples (graphs) serializer, where one line is one row, counted as they come; the stream stops
at the row cap or at the time limit, the rows kept are parsed back by pyoxigraph and written in the
negotiated format by pyoxigraph's own serializer. Nothing is formatted by hand.

The time limit is enforced twice: here between output chunks (the answer is cut, with the rows
found so far), and by the caller, which runs queries in a separate process and stops it when a
query produces nothing in time (pyoxigraph cannot interrupt a running evaluation in-process).
"""

from __future__ import annotations

__all__ = [
    "EMPTY_GRAPH",
    "MAX_NESTING",
    "GRAPH_FORMATS",
    "RESULT_FORMATS",
    "AnswerFormat",
    "CheckedQuery",
    "DatasetChoice",
    "MalformedQueryError",
    "NotAcceptableError",
    "QueryRefusedError",
    "ReadOnlyError",
    "Rendered",
    "ServiceRefusedError",
    "TimeLimitError",
    "check_query",
    "choose_dataset",
    "explain_syntax_error",
    "negotiate",
    "protocol_params",
    "query_options",
    "render",
    "render_lines",
]

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal, cast

import pyoxigraph as ox

from twinprov.provenance.errors import QueryError

Kind = Literal["results", "graph"]
Cut = Literal["row-cap", "time-limit"]

EMPTY_GRAPH = "urn:x-twinprov:no-graph"
"""A graph name that never holds data: stands for "no graph" where a protocol needs a name."""

_FROM_WORD = re.compile(r"(?<!\w)from(?!\w)", re.IGNORECASE)
_QUERY_FORMS = {
    "SelectQuery": "SELECT",
    "AskQuery": "ASK",
    "ConstructQuery": "CONSTRUCT",
    "DescribeQuery": "DESCRIBE",
}


class QueryRefusedError(QueryError):
    """The endpoint will not run this query (HTTP 400)."""


class MalformedQueryError(QueryRefusedError):
    """The text is not a SPARQL 1.1 query; the message is the parser's."""


class ReadOnlyError(QueryRefusedError):
    """The text is a SPARQL Update (or any other write): the endpoint is read-only."""


class ServiceRefusedError(QueryRefusedError):
    """The query has a ``SERVICE`` pattern: the endpoint makes no outbound requests."""


class NotAcceptableError(QueryError):
    """No result format the client accepts fits the query form (HTTP 406)."""


class TimeLimitError(QueryError):
    """The query produced nothing within the time limit and was stopped."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(
            f"the query was stopped at the time limit of {seconds:g} s before it produced "
            "any result; narrow it (a more selective pattern, a LIMIT) and retry"
        )


# -- formats -----------------------------------------------------------------------------------


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


# -- checking ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedQuery:
    """A query that passed the checks, with what the checks learnt about it."""

    text: str
    form: str | None = None
    """SELECT, ASK, CONSTRUCT or DESCRIBE when the query was parsed here; None when the check
    proved it needed no parse (Oxigraph parses it when it runs)."""
    from_graphs: tuple[str, ...] = ()
    """``FROM`` graphs of the query (absolute IRIs)."""
    from_named: tuple[str, ...] = ()
    """``FROM NAMED`` graphs of the query (absolute IRIs)."""

    @property
    def kind(self) -> Kind | None:
        """``results`` (SELECT, ASK), ``graph`` (CONSTRUCT, DESCRIBE) or None if not parsed."""
        if self.form is None:
            return None
        return "results" if self.form in ("SELECT", "ASK") else "graph"


MAX_NESTING = 256
"""Deepest nesting of ``{ ( [`` taken: Oxigraph's recursive parser crashes on a few thousand."""


def _nesting(text: str) -> int:
    depth = deepest = 0
    for ch in text:  # counts brackets in strings and IRIs too: an over-estimate, never under
        if ch in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "})]":
            depth -= 1
    return deepest


def _needs_parse(text: str) -> bool:
    lower = text.lower()
    return "service" in lower or "\\u" in lower or _FROM_WORD.search(text) is not None


def _walk(node: Any) -> Iterable[Any]:
    from pyparsing import ParseResults
    from rdflib.plugins.sparql.parserutils import CompValue

    stack = [node]
    while stack:
        x = stack.pop()
        if isinstance(x, CompValue):
            yield x
            stack.extend(x.values())
        elif isinstance(x, list | tuple | ParseResults):
            stack.extend(x)


def _is_update(text: str) -> bool:
    from rdflib.plugins.sparql.parser import parseUpdate

    try:
        parsed = parseUpdate(text)
    except Exception:  # not an update either: the caller reports the query parser's message
        return False
    return bool(getattr(parsed, "request", None))


_READ_ONLY = (
    "this SPARQL endpoint is read-only: SPARQL Update (INSERT, DELETE, LOAD, CLEAR, CREATE, "
    "DROP, COPY, MOVE, ADD) is refused; send a SELECT, ASK, CONSTRUCT or DESCRIBE query"
)


def explain_syntax_error(text: str, message: str) -> QueryRefusedError:
    """The error to report for a text that Oxigraph's parser rejected with ``message``: an
    update is refused as such; otherwise rdflib's message, which names what it expected, is
    given when rdflib rejects the text too, else Oxigraph's."""
    if _is_update(text):
        return ReadOnlyError(_READ_ONLY)
    from rdflib.plugins.sparql.parser import parseQuery

    try:
        parseQuery(text)
    except Exception as e:  # pyparsing's ParseException names the expected tokens
        message = str(e)
    return MalformedQueryError(f"malformed SPARQL query: {message}")


def check_query(text: str, *, max_chars: int = 65536, parse: bool = False) -> CheckedQuery:
    """Check a query before it runs (see the module docstring); ``parse=True`` parses it even
    when that is not needed for the checks (to learn its form, e.g. before forwarding it).

    Raises:
        QueryRefusedError: empty, too long (``max_chars``) or nested too deep
            (:data:`MAX_NESTING`), malformed (with the parser's message), an update or any other
            write, or a ``SERVICE`` pattern.
    """
    if not text or not text.strip():
        raise MalformedQueryError("the query is empty")
    if len(text) > max_chars:
        raise MalformedQueryError(
            f"the query has {len(text)} characters; this endpoint takes at most {max_chars}"
        )
    if _nesting(text) > MAX_NESTING:
        raise MalformedQueryError(
            f"the query nests brackets more than {MAX_NESTING} levels deep; flatten it"
        )
    if not parse and not _needs_parse(text):
        return CheckedQuery(text)
    from rdflib.plugins.sparql import algebra
    from rdflib.plugins.sparql.parser import parseQuery

    try:
        parsed = parseQuery(text)
    except Exception as e:  # pyparsing's ParseException and friends carry the parser message
        if _is_update(text):
            raise ReadOnlyError(_READ_ONLY) from e
        raise MalformedQueryError(f"malformed SPARQL query: {e}") from e
    for node in _walk(parsed):
        if node.name == "ServiceGraphPattern":
            raise ServiceRefusedError(
                "SERVICE (federated query) is refused: this endpoint makes no outbound requests; "
                "query the other endpoint yourself"
            )
    body = parsed[1]
    form = _QUERY_FORMS.get(body.name)
    if form is None:
        raise MalformedQueryError(f"not a SPARQL query form: {body.name}")
    prologue = algebra.translatePrologue(parsed[0], None)
    default: list[str] = []
    named: list[str] = []
    for clause in body.get("datasetClause") or []:
        for key, bucket in (("default", default), ("named", named)):
            if key in clause:
                bucket.append(str(prologue.absolutize(clause[key])))
    return CheckedQuery(text, form, tuple(default), tuple(named))


# -- the dataset -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetChoice:
    """The RDF dataset a query runs over.

    ``union``: the default graph is the union of all graphs and every named graph is visible (no
    restriction). Otherwise ``default`` lists the graphs merged into the default graph and
    ``named`` the graphs a ``GRAPH`` pattern can see (either may be empty).
    """

    union: bool = False
    default: tuple[str, ...] = ()
    named: tuple[str, ...] = ()


def choose_dataset(
    query: CheckedQuery,
    default_graph_uri: Sequence[str] = (),
    named_graph_uri: Sequence[str] = (),
    permitted: frozenset[str] | None = None,
) -> DatasetChoice:
    """The dataset for ``query`` under the SPARQL 1.1 Protocol rules, within ``permitted``.

    The protocol's ``default-graph-uri`` / ``named-graph-uri`` win over the query's ``FROM`` /
    ``FROM NAMED``; with neither, the default graph is the union of the run graphs and every run
    graph is a named graph. ``permitted`` (None: no restriction) is the set of graphs the user may
    read: every other graph is left out, silently (as if it did not exist).
    """
    if default_graph_uri or named_graph_uri:
        default, named = tuple(default_graph_uri), tuple(named_graph_uri)
    elif query.from_graphs or query.from_named:
        default, named = query.from_graphs, query.from_named
    elif permitted is None:
        return DatasetChoice(union=True)
    else:
        allowed = tuple(sorted(permitted))
        return DatasetChoice(False, allowed, allowed)
    for iri in (*default, *named):
        try:
            ox.NamedNode(iri)
        except ValueError as e:
            raise MalformedQueryError(f"graph name '{iri}' is not an absolute IRI: {e}") from e
    if permitted is not None:
        default = tuple(g for g in default if g in permitted)
        named = tuple(g for g in named if g in permitted)
    return DatasetChoice(False, _dedup(default), _dedup(named))


def _dedup(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def query_options(choice: DatasetChoice) -> dict[str, Any]:
    """Keyword arguments of ``pyoxigraph.Store.query`` that set ``choice`` as the dataset."""
    if choice.union:
        return {"use_default_graph_as_union": True}
    return {
        "default_graph": [ox.NamedNode(g) for g in choice.default],
        "named_graphs": [ox.NamedNode(g) for g in choice.named],
    }


def protocol_params(choice: DatasetChoice) -> list[tuple[str, str]]:
    """SPARQL 1.1 Protocol parameters that set ``choice`` as the dataset on another server.

    An empty graph list is sent as :data:`EMPTY_GRAPH`: sending no parameter would let the server
    fall back to its own default dataset.
    """
    if choice.union:
        return []
    params = [("default-graph-uri", g) for g in choice.default or (EMPTY_GRAPH,)]
    params += [("named-graph-uri", g) for g in choice.named or (EMPTY_GRAPH,)]
    return params


# -- answering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """A serialized answer and where it was cut."""

    body: bytes
    media_type: str
    form: str
    rows: int | None = None
    """Solutions or triples in the answer (None for ASK)."""
    cut: Cut | None = None
    """Why the answer is incomplete: ``row-cap`` or ``time-limit`` (None: complete)."""
    extra: dict[str, str] = field(default_factory=dict)


class _Stop(Exception):
    pass


class _LineCounter:
    """A binary sink that keeps at most ``cap`` lines after ``header`` lines, and stops the
    serializer that writes into it (by raising) when there are more, or when time is up."""

    def __init__(self, cap: int, deadline: float | None, header: int) -> None:
        self.buf = bytearray()
        self.lines = 0
        self.limit = cap + header
        self.deadline = deadline
        self.cut: Cut | None = None

    def feed(self, chunk: bytes) -> bool:
        """Take a chunk; False when the stream should stop."""
        self.buf += chunk
        self.lines += chunk.count(b"\n")
        if self.lines > self.limit:
            self.cut = "row-cap"
            return False
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.cut = "time-limit"
            return False
        return True

    def write(self, chunk: bytes) -> int:
        if not self.feed(bytes(chunk)):
            raise _Stop
        return len(chunk)

    def flush(self) -> None:
        pass

    def kept(self) -> bytes:
        """The complete lines kept (all of them if the stream was not cut)."""
        data = bytes(self.buf)
        if self.cut is None:
            return data if not data or data.endswith(b"\n") else data + b"\n"
        lines = data.split(b"\n")[:-1]  # the last piece is empty or a partly written line
        return b"".join(line + b"\n" for line in lines[: self.limit])


def _finish_solutions(tsv: bytes, fmt: AnswerFormat, cut: Cut | None) -> Rendered:
    solutions = ox.parse_query_results(tsv, format=ox.QueryResultsFormat.TSV)
    rows = max(tsv.count(b"\n") - 1, 0)
    body = solutions.serialize(format=fmt.ox_format) or b""
    return Rendered(body, fmt.media_type, "SELECT", rows, cut)


def _finish_triples(nt: bytes, fmt: AnswerFormat, cut: Cut | None, form: str) -> Rendered:
    triples = [q.triple for q in ox.parse(nt, format=ox.RdfFormat.N_TRIPLES)]
    body = bytes(ox.serialize(triples, format=fmt.ox_format) or b"")
    return Rendered(body, fmt.media_type, form, len(triples), cut)


def render(
    result: Any,
    *,
    accept: str | None,
    fmt: str | None,
    row_cap: int,
    deadline: float | None,
    form: str | None = None,
) -> Rendered:
    """Serialize a pyoxigraph query result within ``row_cap`` rows and the ``deadline``
    (a :func:`time.monotonic` value, or None).

    Raises:
        NotAcceptableError: no acceptable format fits the result.
    """
    if isinstance(result, ox.QueryBoolean):
        f = negotiate("results", accept, fmt)
        return Rendered(result.serialize(format=f.ox_format) or b"", f.media_type, "ASK")
    if isinstance(result, ox.QuerySolutions):
        f = negotiate("results", accept, fmt)
        sink = _LineCounter(row_cap, deadline, header=1)
        with contextlib.suppress(_Stop):  # the sink stops the serializer at a limit
            result.serialize(cast(IO[bytes], sink), format=ox.QueryResultsFormat.TSV)
        return _finish_solutions(sink.kept(), f, sink.cut)
    f = negotiate("graph", accept, fmt)
    sink = _LineCounter(row_cap, deadline, header=0)
    with contextlib.suppress(_Stop):
        result.serialize(sink, format=ox.RdfFormat.N_TRIPLES)
    return _finish_triples(sink.kept(), f, sink.cut, form or "CONSTRUCT")


def render_lines(
    chunks: Iterable[bytes],
    *,
    kind: Kind,
    form: str,
    accept: str | None,
    fmt: str | None,
    row_cap: int,
    deadline: float | None,
    on_stop: Callable[[], None] | None = None,
) -> Rendered:
    """Like :func:`render`, for rows that arrive as bytes from another SPARQL server: SELECT
    results as TSV (``kind='results'``) or CONSTRUCT/DESCRIBE triples as N-Triples (``'graph'``).
    ``on_stop`` is called when the stream is cut, to close it."""
    f = negotiate(kind, accept, fmt)
    sink = _LineCounter(row_cap, deadline, header=1 if kind == "results" else 0)
    for chunk in chunks:
        if not sink.feed(chunk):
            if on_stop is not None:
                on_stop()
            break
    if kind == "results":
        return _finish_solutions(sink.kept(), f, sink.cut)
    return _finish_triples(sink.kept(), f, sink.cut, form)
