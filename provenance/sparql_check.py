"""Checking a SPARQL query before it runs: read-only, no ``SERVICE``, within the size limits.

This is the part of the SPARQL endpoint that needs no web framework and no Airflow (the endpoint in
``plugins/`` handles HTTP and authentication, then calls these functions; the values of the limits
come from it as arguments). The dataset a query may see is chosen by
:mod:`twinprov.provenance.sparql_dataset`, the answer written by
:mod:`twinprov.provenance.sparql_results`.

* A query that mentions none of ``SERVICE``, ``FROM`` or a ``\\u`` escape cannot hold a federated
  ``SERVICE`` pattern nor a dataset clause, so it goes straight to Oxigraph, whose own parser
  rejects anything that is not a query (updates included) before any data is read.
* Any other query is parsed with rdflib's SPARQL 1.1 parser (which also expands ``\\u`` escapes):
  a ``SERVICE`` pattern anywhere is refused, ``FROM`` / ``FROM NAMED`` graphs are read out so the
  caller can restrict them to the graphs the user may read, and the query form is known.
* A text that is an update (``INSERT``, ``DELETE``, ``LOAD``, ``CLEAR``, ``DROP``…) is refused as
  such, with a message saying the endpoint is read-only; any other malformed text is refused with
  the parser's message.
"""

from __future__ import annotations

__all__ = [
    "MAX_NESTING",
    "CheckedQuery",
    "Kind",
    "MalformedQueryError",
    "QueryRefusedError",
    "ReadOnlyError",
    "ServiceRefusedError",
    "check_query",
    "explain_syntax_error",
]

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from twinprov.provenance.errors import QueryError

Kind = Literal["results", "graph"]
"""What a query answers with: ``results`` (SELECT, ASK) or a ``graph`` (CONSTRUCT, DESCRIBE)."""

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


_PREFIX_RUN = re.compile(r"(?:[!^]\s*){" + str(MAX_NESTING + 1) + ",}")
"""A run of more than :data:`MAX_NESTING` prefix operators (``!``, ``^``): each is one more level
of Oxigraph's recursive parser (60,000 ``!`` overflow its stack)."""


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


_PARSER = threading.Lock()
"""rdflib's parser (pyparsing) keeps state in shared grammar objects: one parse at a time."""


def _parse_query(text: str) -> Any:
    from rdflib.plugins.sparql.parser import parseQuery

    with _PARSER:
        return parseQuery(text)


def _is_update(text: str) -> bool:
    from rdflib.plugins.sparql.parser import parseUpdate

    try:
        with _PARSER:
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
    try:
        _parse_query(text)
    except Exception as e:  # pyparsing's ParseException names the expected tokens
        message = str(e)
    return MalformedQueryError(f"malformed SPARQL query: {message}")


def check_query(text: str, *, max_chars: int = 65536, parse: bool = False) -> CheckedQuery:
    """Check a query before it runs (see the module docstring); ``parse=True`` parses it even
    when that is not needed for the checks (to learn its form, e.g. before forwarding it).

    Raises:
        QueryRefusedError: empty, too long (``max_chars``) or nested too deep
            (:data:`MAX_NESTING`: brackets, or ``!`` / ``^`` in a row), malformed (with the
            parser's message), an update or any other write, or a ``SERVICE`` pattern.
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
    if _PREFIX_RUN.search(text):
        raise MalformedQueryError(
            f"the query chains more than {MAX_NESTING} prefix operators ('!' or '^') in a row; "
            "simplify the expression"
        )
    if not parse and not _needs_parse(text):
        return CheckedQuery(text)
    from rdflib.plugins.sparql import algebra

    try:
        parsed = _parse_query(text)
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
