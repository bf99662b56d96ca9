"""The RDF dataset a checked query runs over: the graphs the SPARQL 1.1 Protocol and the query
name, within the graphs the user may read; as ``pyoxigraph.Store.query`` arguments (the embedded
store) or as protocol parameters (another SPARQL server)."""

from __future__ import annotations

__all__ = [
    "EMPTY_GRAPH",
    "DatasetChoice",
    "choose_dataset",
    "protocol_params",
    "query_options",
]

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyoxigraph as ox

from twinprov.provenance.sparql_check import CheckedQuery, MalformedQueryError

EMPTY_GRAPH = "urn:x-twinprov:no-graph"
"""A graph name that never holds data: stands for "no graph" where a protocol needs a name."""


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
