"""The graph store as a SPARQL 1.1 server: Oxigraph server (``oxigraph serve``), Fuseki, GraphDB…

The same four operations as the embedded store (:class:`twinprov.provenance.store.EmbeddedStore`),
over
HTTP:

* :meth:`SparqlStore.replace_graph` sends the run's Turtle with one Graph Store Protocol ``PUT``
  of its named graph. ``PUT`` *replaces* the graph, so a retry, a replay or a catch-up of the same
  run never duplicates a triple, and two writers of the same run leave one of the two complete
  versions, never a mix.
* :meth:`SparqlStore.replace_graphs` (a catch-up of many runs) sends many graphs per request: to
  an Oxigraph server, one SPARQL update that drops the graphs, then one ``POST`` of all their
  triples as N-Quads (parsed and serialized here, checked before anything is sent) to Oxigraph's
  bulk loader (``no_transaction``), in two concurrent parts (the server loads each on one core).
  Dropping first keeps it idempotent: a replay never duplicates a triple. Two writers of the same
  content (a publication and a catch-up of the same run) also leave exactly that content, since a
  graph is a set of triples; a graph whose Turtle has blank nodes, which a second load would
  copy, is sent with its own ``PUT`` instead. While a part loads, a query may see its graphs
  missing or partial. Another server gets one ``PUT`` per graph.
* :meth:`SparqlStore.query` posts the query to the SPARQL 1.1 Protocol endpoint, asking for SPARQL
  Query Results JSON (SELECT, ASK) or N-Triples (CONSTRUCT, DESCRIBE), and hands back the same
  pyoxigraph objects the embedded store returns (``QuerySolutions``, ``QueryBoolean``,
  ``QueryTriples``), parsed by pyoxigraph's own parsers: callers cannot tell the two stores apart.
* :meth:`SparqlStore.graph_size` and :meth:`SparqlStore.graphs` are SPARQL queries.

Every failure to reach the server, or a server error, is a
:class:`~twinprov.provenance.errors.StoreError`
(so a publication leaves its run pending in the ledger, to be caught up later); a query the server
rejects as malformed is a :class:`~twinprov.provenance.errors.QueryError`. No Airflow here.
"""

from __future__ import annotations

__all__ = ["SparqlStore"]

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pyoxigraph as ox

from twinprov.provenance.errors import QueryError, StoreError

_RESULTS_JSON = "application/sparql-results+json"
_NTRIPLES = "application/n-triples"
_NQUADS = "application/n-quads"
_ACCEPT = f"{_RESULTS_JSON}, {_NTRIPLES};q=0.9"
_USER_AGENT = "twinprov"
_MIN_BULK_PART = 32
"""Graphs a bulk request carries at least, when :attr:`SparqlStore.parallel` > 1 splits them."""


def safe_url(url: str) -> str:
    """``url`` without the password of its user part (safe to print)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<sparql url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _iri_literal(iri: str) -> str:
    """``<iri>`` in SPARQL syntax, through pyoxigraph (which refuses what is not an IRI)."""
    try:
        return str(ox.NamedNode(iri))
    except ValueError as e:
        raise StoreError(f"'{iri}' is not an IRI: {e}") from e


class SparqlStore:
    """A SPARQL 1.1 server as the run-graph store; use :meth:`open` as a context manager.

    Args:
        query_url: the SPARQL 1.1 Protocol query endpoint (``[twinprov] sparql_url``).
        gsp_url: the Graph Store Protocol endpoint (``[twinprov] sparql_gsp_url``).
        timeout_s: time limit of one HTTP request.
        parallel: concurrent bulk requests of :meth:`replace_graphs` (Oxigraph loads each
            request with one core).
    """

    def __init__(
        self, query_url: str, gsp_url: str, *, timeout_s: float = 60.0, parallel: int = 2
    ) -> None:
        missing = [k for k, v in (("sparql_url", query_url), ("sparql_gsp_url", gsp_url)) if not v]
        if missing:
            raise StoreError(
                "a SPARQL server as graph store needs both [twinprov] sparql_url (query "
                "endpoint) and sparql_gsp_url (Graph Store Protocol endpoint); missing: "
                + ", ".join(missing)
            )
        self.query_url = query_url
        self.gsp_url = gsp_url
        self.timeout_s = timeout_s
        self.parallel = max(1, parallel)
        self._client: httpx.Client | None = None
        self._bulk: str | None = None  # Oxigraph's update endpoint ("" elsewhere), once known

    def __repr__(self) -> str:
        return f"SparqlStore({safe_url(self.query_url)!r}, {safe_url(self.gsp_url)!r})"

    @contextmanager
    def open(self) -> Iterator[SparqlStore]:
        """Keep one HTTP connection pool for the duration of the ``with`` block."""
        plain = all(u.lower().startswith("http://") for u in (self.query_url, self.gsp_url))
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 5.0)),
            headers={"User-Agent": _USER_AGENT},
            follow_redirects=False,
            # plain HTTP (a server beside Airflow) uses no TLS: skip loading the CA bundle, ~50 ms
            # per publish task; any https:// URL keeps full certificate verification
            verify=not plain,
        )
        try:
            yield self
        finally:
            client, self._client = self._client, None
            client.close()

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            raise StoreError("the graph store is not open; use `with store.open():`")
        return self._client

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.client.request(method, url, **kwargs)
        except httpx.TimeoutException as e:
            raise StoreError(
                f"the SPARQL server at {safe_url(url)} did not answer within "
                f"{self.timeout_s:g} s ({type(e).__name__})"
            ) from e
        except httpx.HTTPError as e:
            raise StoreError(
                f"the SPARQL server at {safe_url(url)} cannot be reached: {type(e).__name__}: {e}"
            ) from e

    @staticmethod
    def _fail(resp: httpx.Response, what: str) -> StoreError:
        body = resp.text[:500].strip()
        return StoreError(
            f"the SPARQL server refused to {what} (HTTP {resp.status_code} from "
            f"{safe_url(str(resp.request.url))}): {body}"
        )

    # -- the store interface -----------------------------------------------------------------

    def replace_graph(self, graph_iri: str, turtle: str | bytes) -> int:
        """Make the named graph exactly ``turtle``'s triples (one GSP ``PUT``); returns the
        number of distinct triples sent, which is what the graph now holds.

        Raises:
            StoreError: the Turtle does not parse (nothing is sent), the server cannot be
                reached, or it refused the graph.
        """
        _iri_literal(graph_iri)
        data = turtle.encode("utf-8") if isinstance(turtle, str) else turtle
        try:  # parsed here first: a document the server would reject is never half-sent
            count = len(set(ox.parse(data, format=ox.RdfFormat.TURTLE)))
        except SyntaxError as e:
            raise StoreError(f"the graph <{graph_iri}> is not valid Turtle: {e}") from e
        self._put(graph_iri, data, "text/turtle; charset=utf-8")
        return count

    def _put(self, graph_iri: str, data: bytes, content_type: str) -> None:
        resp = self._send(
            "PUT",
            self.gsp_url,
            params={"graph": graph_iri},
            content=data,
            headers={"Content-Type": content_type},
        )
        if resp.status_code not in (200, 201, 204):
            raise self._fail(resp, f"store graph <{graph_iri}>")

    def replace_graphs(self, graphs: Iterable[tuple[str, str | bytes]]) -> int:
        """Make each named graph exactly its Turtle's triples, many graphs per request (see the
        module notes); returns the number of triples sent, which is what the graphs now hold.

        The graphs go in up to :attr:`parallel` parts, each sent as soon as its documents are
        parsed, while the next part is being parsed. A document that does not parse stops the
        call: its part and the later ones are not sent (nothing at all in a call of fewer than
        ``2 * 32`` graphs), earlier parts may be. The graphs of one call are not replaced in
        one transaction: a failure half-way leaves some replaced and some dropped or partly
        loaded, which the same call, replayed, repairs.

        Raises:
            StoreError: a Turtle document does not parse, a name is not an IRI, the server
                cannot be reached, or it refused a request.
        """
        docs = list(graphs)
        parts = max(1, min(self.parallel, len(docs) // _MIN_BULK_PART))
        step = max(1, -(-len(docs) // parts))
        single: list[tuple[str, bytes]] = []  # (graph IRI, its Turtle): blank nodes
        part: list[tuple[str, bytes]] = []  # (graph IRI, its triples as N-Triples)
        count = 0
        with ThreadPoolExecutor(parts, thread_name_prefix="twinprov-load") as pool:
            sent = []
            for graph_iri, turtle in docs:
                _iri_literal(graph_iri)
                data = turtle.encode("utf-8") if isinstance(turtle, str) else turtle
                try:
                    nt = ox.serialize(
                        ox.parse(data, format=ox.RdfFormat.TURTLE), format=ox.RdfFormat.N_TRIPLES
                    )
                except SyntaxError as e:
                    raise StoreError(f"the graph <{graph_iri}> is not valid Turtle: {e}") from e
                nt = nt or b""
                count += nt.count(b"\n")  # one triple a line (a newline in a literal is escaped)
                if b"_:" in nt:  # blank nodes (or "_:" in an IRI or literal: a PUT of its own)
                    single.append((graph_iri, data))
                else:
                    part.append((graph_iri, nt))
                if len(part) >= step:
                    sent.append(self._submit_part(pool, part))
                    part = []
            if part:
                sent.append(self._submit_part(pool, part))
            for f in sent:
                f.result()  # the first failure, once every part has ended
        for graph_iri, data in single:
            self._put(graph_iri, data, "text/turtle; charset=utf-8")
        return count

    def _submit_part(
        self, pool: ThreadPoolExecutor, graphs: list[tuple[str, bytes]]
    ) -> Future[None]:
        """Send a part of :meth:`replace_graphs` from ``pool``: to Oxigraph, one SPARQL update
        dropping its graphs (and making the empty ones), then one N-Quads ``POST`` of all their
        triples to the bulk loader; ``PUT`` per graph to another server."""
        update_url = self._bulk_update_url()  # asked here, once, rather than by each part
        if update_url is None:
            return pool.submit(self._put_each, graphs)
        return pool.submit(self._load_part, update_url, graphs)

    def _put_each(self, graphs: list[tuple[str, bytes]]) -> None:
        for graph_iri, nt in graphs:
            self._put(graph_iri, nt, _NTRIPLES)

    def _load_part(self, update_url: str, graphs: list[tuple[str, bytes]]) -> None:
        names = [_iri_literal(g) for g, _nt in graphs]
        update = " ;\n".join(
            f"DROP SILENT GRAPH {g}" + ("" if nt else f" ;\nCREATE SILENT GRAPH {g}")
            for g, (_iri, nt) in zip(names, graphs, strict=True)
        )
        resp = self._send(
            "POST",
            update_url,
            content=update.encode("utf-8"),
            headers={"Content-Type": "application/sparql-update"},
        )
        if resp.status_code not in (200, 204):
            raise self._fail(resp, f"drop {len(graphs)} graph(s) before loading them")
        # N-Triples → N-Quads: the graph name before each line's final " ."
        body = b"".join(
            nt.replace(b" .\n", b" " + g.encode("utf-8") + b" .\n")
            for g, (_iri, nt) in zip(names, graphs, strict=True)
        )
        if body:
            resp = self._send(
                "POST",
                self.gsp_url,
                params={"no_transaction": ""},
                content=body,
                headers={"Content-Type": _NQUADS},
            )
            if resp.status_code not in (200, 201, 204):
                raise self._fail(resp, f"load {len(graphs)} graph(s)")

    def _bulk_update_url(self) -> str | None:
        """The update endpoint of an Oxigraph server (``/update`` next to ``/store``), which
        takes bulk loads; ``None`` for another server (asked once per open store)."""
        if self._bulk is None:
            base, sep, last = self.gsp_url.rstrip("/").rpartition("/")
            bulk = ""
            if sep and last == "store" and self.query_url.rstrip("/") == f"{base}/query":
                resp = self._send("GET", self.query_url, params={"query": "ASK {}"})
                if resp.headers.get("server", "").lower().startswith("oxigraph/"):
                    bulk = f"{base}/update"
            self._bulk = bulk
        return self._bulk or None

    def graph_size(self, graph_iri: str) -> int:
        """Number of triples in a named graph."""
        g = _iri_literal(graph_iri)
        res = self._select(f"SELECT (COUNT(*) AS ?n) WHERE {{ GRAPH {g} {{ ?s ?p ?o }} }}")
        for sol in res:
            n = sol["n"]
            return int(n.value) if n is not None else 0
        return 0

    def graphs(self) -> list[str]:
        """Names of every graph in the store."""
        res = self._select("SELECT DISTINCT ?g WHERE { GRAPH ?g { } }")
        return sorted(sol["g"].value for sol in res if isinstance(sol["g"], ox.NamedNode))

    def _select(self, sparql: str) -> ox.QuerySolutions:
        try:
            res = self.query(sparql)
        except QueryError as e:
            raise StoreError(str(e)) from e
        if not isinstance(res, ox.QuerySolutions):
            raise StoreError(f"the SPARQL server answered a SELECT with {type(res).__name__}")
        return res

    def query(self, sparql: str) -> Any:
        """Run a SPARQL 1.1 query on the server; the answer as pyoxigraph query results."""
        resp = self._send(
            "POST",
            self.query_url,
            data={"query": sparql},
            headers={"Accept": _ACCEPT},
        )
        if resp.status_code == 400:
            raise QueryError(f"malformed SPARQL: {resp.text[:2000].strip()}")
        if resp.status_code != 200:
            raise self._fail(resp, "answer a query")
        kind = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        try:
            if kind in (_RESULTS_JSON, "application/json"):
                return ox.parse_query_results(resp.content, format=ox.QueryResultsFormat.JSON)
            if kind in (_NTRIPLES, "text/plain"):
                return _as_query_triples(resp.content)
        except (SyntaxError, ValueError) as e:
            raise StoreError(
                f"the SPARQL server at {safe_url(self.query_url)} sent an answer that does not "
                f"parse as {kind}: {e}"
            ) from e
        raise StoreError(
            f"the SPARQL server at {safe_url(self.query_url)} answered in {kind or 'no format'}; "
            f"twinprov asks for {_RESULTS_JSON} or {_NTRIPLES}"
        )


def _as_query_triples(ntriples: bytes) -> ox.QueryTriples:
    """The triples of a CONSTRUCT/DESCRIBE answer as a pyoxigraph ``QueryTriples`` (what the
    embedded store returns), by loading them into a throw-away in-memory store."""
    mem = ox.Store()
    mem.load(ntriples, format=ox.RdfFormat.N_TRIPLES)
    res = mem.query("CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }")
    assert isinstance(res, ox.QueryTriples)
    return res
