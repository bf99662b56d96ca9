"""Forwarding checked queries to a SPARQL 1.1 server (``[twinprov] sparql_url``). No Airflow.

Used when the graphs live in an Oxigraph server (``oxigraph serve``), Fuseki, GraphDB… instead of
the embedded store. The query has passed the same checks as an embedded one (parsed, no update, no
``SERVICE``); the user's reach is sent as the SPARQL Protocol's ``default-graph-uri`` /
``named-graph-uri`` (the run graphs of the DAGs they may read, from the ledger). Solutions come
back as TSV and triples as N-Triples, one row a line, so the same row cap and time limit apply
while they stream in; pyoxigraph re-serializes them in the format the client asked for.

For a user who may read every DAG and names no dataset, nothing is sent and the server's own
default graph is used: start it so that this is the union of the run graphs (``oxigraph serve
--union-default-graph``; Fuseki ``tdb2:unionDefaultGraph true``).
"""

from __future__ import annotations

__all__ = ["Forwarder", "UpstreamError"]

import json
import time
from collections.abc import Iterator

import httpx
import pyoxigraph as ox

from twinprov.airflow.graph_worker import QueryRequest
from twinprov.airflow.negotiation import Negotiation
from twinprov.provenance.errors import QueryError, StoreError
from twinprov.provenance.ids import Ids
from twinprov.provenance.sparql_check import CheckedQuery, QueryRefusedError
from twinprov.provenance.sparql_dataset import choose_dataset, protocol_params
from twinprov.provenance.sparql_results import Rendered, TimeLimitError, render, render_lines


class UpstreamError(QueryError):
    """The SPARQL server answered with an error (HTTP 502)."""


class Forwarder:
    """Sends checked queries to one SPARQL server."""

    def __init__(self, url: str, *, ledger_url: str, base_iri: str) -> None:
        self.url = url
        self.ledger_url = ledger_url
        self.ids = Ids(base_iri)
        self.client = httpx.Client(follow_redirects=False, headers={"User-Agent": "twinprov"})
        self._map: tuple[float, dict[str, set[str]]] | None = None

    _MAP_TTL_S = 2.0

    def _graphs_by_dag(self) -> dict[str, set[str]]:
        """Run graphs of every recorded DAG, from the ledger (read again after a few seconds)."""
        from sqlalchemy import select

        from twinprov.provenance.ledger import Ledger
        from twinprov.provenance.ledger import runs as runs_table

        now = time.monotonic()
        if self._map is not None and now - self._map[0] < self._MAP_TTL_S:
            return self._map[1]
        t = runs_table
        found: dict[str, set[str]] = {}
        rows = Ledger(self.ledger_url).select_rows(select(t.c.dag_id, t.c.run_id, t.c.publication))
        for dag_id, run_id, publication in rows:
            graphs = found.setdefault(dag_id, set())
            graphs.add(self.ids.run(dag_id, run_id))
            if publication:
                graph = json.loads(publication).get("graph")
                if graph:
                    graphs.add(str(graph))
        self._map = (now, found)
        return found

    def permitted_graphs(self, dags: frozenset[str]) -> frozenset[str] | None:
        """Run graphs of ``dags``; None when ``dags`` covers every recorded DAG."""
        by_dag = self._graphs_by_dag()
        if set(by_dag) <= dags:
            return None
        return frozenset(g for d in dags for g in by_dag.get(d, ()))

    def answer(
        self, req: QueryRequest, query: CheckedQuery, *, time_limit_s: float | None = None
    ) -> Rendered:
        """Forward ``query`` (``req``'s text, checked, so its form is known) and render the
        answer, within ``time_limit_s`` (default: the request's).

        Raises:
            QueryRefusedError: the server rejected the query as malformed (HTTP 400).
            TimeLimitError: the server did not answer within the time limit (HTTP 503).
            StoreError: the server cannot be reached (HTTP 503).
            UpstreamError: the server failed (HTTP 502).
        """
        choose = Negotiation(req.accept, req.fmt).choose
        row_cap = req.row_cap
        time_limit_s = req.time_limit_s if time_limit_s is None else time_limit_s
        if query.form is None:
            raise QueryError("a forwarded query must have been parsed")
        choice = choose_dataset(
            query,
            req.default_graph_uri,
            req.named_graph_uri,
            self.permitted_graphs(req.permitted_dags),
        )
        kind = query.kind
        accept_upstream = {
            "ASK": "application/sparql-results+json",
            "SELECT": "text/tab-separated-values",
        }.get(query.form, "application/n-triples")
        started = time.monotonic()
        deadline = started + time_limit_s
        data = [("query", query.text), *protocol_params(choice)]
        timeout = httpx.Timeout(time_limit_s, connect=min(time_limit_s, 5.0))
        try:
            with self.client.stream(
                "POST",
                self.url,
                data=_group(data),
                headers={"Accept": accept_upstream},
                timeout=timeout,
            ) as resp:
                if resp.status_code != 200:
                    body = resp.read().decode("utf-8", "replace")[:2000]
                    if resp.status_code == 400:
                        raise QueryRefusedError(f"the SPARQL server refused the query: {body}")
                    raise UpstreamError(
                        f"the SPARQL server at {self.url} answered {resp.status_code}: {body}"
                    )
                if query.form == "ASK":
                    answer = ox.parse_query_results(resp.read(), format=ox.QueryResultsFormat.JSON)
                    return render(answer, choose=choose, row_cap=row_cap, deadline=None, form="ASK")
                assert kind is not None
                return render_lines(
                    _chunks(resp.iter_bytes()),
                    kind=kind,
                    form=query.form,
                    choose=choose,
                    row_cap=row_cap,
                    deadline=deadline,
                    on_stop=resp.close,
                    max_bytes=req.max_answer_bytes,
                )
        except httpx.TimeoutException as e:
            if isinstance(e, httpx.ConnectTimeout):
                raise StoreError(f"the SPARQL server at {self.url} cannot be reached: {e}") from e
            raise TimeLimitError(req.time_limit_s) from e
        except httpx.TransportError as e:
            raise StoreError(f"the SPARQL server at {self.url} cannot be reached: {e}") from e

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()


def _group(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped


def _chunks(stream: Iterator[bytes]) -> Iterator[bytes]:
    yield from stream
