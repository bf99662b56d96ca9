"""The graph store: one named graph per run, derived from the ledger and rebuildable from it.

Two kinds, with the same four operations (:class:`GraphStore`), chosen in one place,
:func:`open_store`, from the settings:

* the embedded store (default), pyoxigraph on disk. It has one owner process at a time
  (pyoxigraph's own rule), so it is opened for one operation and closed straight after; a second
  process that finds it locked gets a :class:`~twinprov.provenance.errors.StoreError` naming the
  cause, and
  the ledger keeps the provenance until a later catch-up;
* a SPARQL 1.1 server (``[twinprov] sparql_url`` + ``sparql_gsp_url``; see
  :mod:`twinprov.provenance.remote_store`), for deployments where many processes publish and query.
"""

from __future__ import annotations

__all__ = ["EmbeddedStore", "GraphStore", "open_store"]

import gc
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import pyoxigraph as ox

from twinprov.provenance.errors import QueryError, StoreError


class GraphStore(Protocol):
    """What publication and queries need of an open graph store."""

    def replace_graph(self, graph_iri: str, turtle: str | bytes) -> int:
        """Make the named graph exactly ``turtle``'s triples; returns the triple count."""
        ...

    def replace_graphs(self, graphs: Iterable[tuple[str, str | bytes]]) -> int:
        """:meth:`replace_graph` for many ``(graph IRI, Turtle)`` at once (a catch-up), as few
        writes as the store allows; returns the number of triples."""
        ...

    def graph_size(self, graph_iri: str) -> int:
        """Number of triples in a named graph."""
        ...

    def graphs(self) -> list[str]:
        """Names of every graph in the store."""
        ...

    def query(self, sparql: str) -> Any:
        """A SPARQL 1.1 query over the union of the run graphs: pyoxigraph ``QuerySolutions``,
        ``QueryBoolean`` or ``QueryTriples``."""
        ...


class EmbeddedStore:
    """pyoxigraph store in a folder; use :meth:`open` as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._store: ox.Store | None = None

    @contextmanager
    def open(self) -> Iterator[EmbeddedStore]:
        """Open the store for the duration of the ``with`` block."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._store = ox.Store(str(self.path))
        except OSError as first:
            if "current process" not in str(first):
                raise StoreError(
                    f"graph store {self.path} is busy or unreadable ({first}); "
                    "another process owns it - retry when it is done"
                ) from first
            # a handle of this process that only a reference cycle keeps alive: collect it
            # (rare, and a full collection is slow in a large process, so only then)
            gc.collect()
            try:
                self._store = ox.Store(str(self.path))
            except OSError as e:
                raise StoreError(
                    f"graph store {self.path} is still open in this process: {e}"
                ) from e
        try:
            yield self
        finally:
            self._store = None  # the last reference: the store closes and releases its lock

    @property
    def store(self) -> ox.Store:
        if self._store is None:
            raise StoreError("the graph store is not open; use `with store.open():`")
        return self._store

    def replace_graph(self, graph_iri: str, turtle: str | bytes) -> int:
        """Make the named graph exactly ``turtle``'s triples; returns the triple count."""
        g = ox.NamedNode(graph_iri)
        if self.store.contains_named_graph(g):
            self.store.remove_graph(g)
        self.store.load(turtle, format=ox.RdfFormat.TURTLE, to_graph=g)
        self.store.flush()
        return self.graph_size(graph_iri)

    def replace_graphs(self, graphs: Iterable[tuple[str, str | bytes]]) -> int:
        """:meth:`replace_graph` for many graphs, flushed once at the end; returns the number
        of triples they now hold."""
        total = 0
        try:
            for graph_iri, turtle in graphs:
                g = ox.NamedNode(graph_iri)
                if self.store.contains_named_graph(g):
                    self.store.remove_graph(g)
                self.store.load(turtle, format=ox.RdfFormat.TURTLE, to_graph=g)
                total += self.graph_size(graph_iri)
        finally:
            self.store.flush()
        return total

    def graph_size(self, graph_iri: str) -> int:
        """Number of triples in a named graph."""
        g = ox.NamedNode(graph_iri)
        return sum(1 for _ in self.store.quads_for_pattern(None, None, None, g))

    def graphs(self) -> list[str]:
        """Names of every graph in the store."""
        return sorted(n.value for n in self.store.named_graphs() if isinstance(n, ox.NamedNode))

    def query(self, sparql: str) -> Any:
        """Run a SPARQL 1.1 query over the union of all run graphs (and each as a named graph)."""
        try:
            return self.store.query(sparql, use_default_graph_as_union=True)
        except SyntaxError as e:
            raise QueryError(f"malformed SPARQL: {e}") from e
        except (OSError, ValueError, RuntimeError) as e:
            raise QueryError(f"query failed: {e}") from e


def open_store(settings: Any) -> AbstractContextManager[Any]:
    """The run-graph store the settings name, as a context manager yielding an open
    :class:`GraphStore`: a SPARQL 1.1 server when ``settings.sparql_url`` or
    ``settings.sparql_gsp_url`` is set (both are then needed), else the embedded pyoxigraph store
    at ``settings.store_path``.

    Raises:
        StoreError: the server settings are incomplete, or the embedded store is held by
            another process.
    """
    query_url = str(getattr(settings, "sparql_url", "") or "")
    gsp_url = str(getattr(settings, "sparql_gsp_url", "") or "")
    if query_url or gsp_url:
        from twinprov.provenance.remote_store import SparqlStore

        timeout = float(getattr(settings, "sparql_timeout_s", 60.0) or 60.0)
        return SparqlStore(query_url, gsp_url, timeout_s=timeout).open()
    return EmbeddedStore(settings.store_path).open()
