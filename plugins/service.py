"""The provenance service behind the twinprov app: settings, the graph store, the ledger.

One per API-server process, made on first use (never at import: the plugin is imported by every
Airflow component). Queries go to the embedded store through its owner process
(:mod:`twinprov.airflow.graph_worker`) or, when ``[twinprov] sparql_url`` is set, to that SPARQL
server (:mod:`twinprov.airflow.forward`), after the same checks. The checks run in the child
process too (with a forwarding endpoint it only checks), within the time limit: nothing here
parses a query.
"""

from __future__ import annotations

import logging
import threading
import time

from twinprov.airflow.forward import Forwarder
from twinprov.airflow.graph_worker import CheckRequest, GraphWorker, QueryRequest, WorkerConfig
from twinprov.airflow.settings import EndpointSettings
from twinprov.provenance.config import Settings
from twinprov.provenance.sparql_results import Rendered, TimeLimitError

log = logging.getLogger(__name__)


class ProvenanceService:
    """Answers checked queries within the user's reach and the configured limits."""

    CATCH_UP_EVERY_S = 5.0
    """A SPARQL server is brought up to the ledger before a query at most this often."""

    def __init__(self, settings: Settings, limits: EndpointSettings) -> None:
        self.settings = settings
        self.limits = limits
        self.forwarder: Forwarder | None = None
        self._caught_up_at = float("-inf")
        self._catching_up = threading.Lock()
        if limits.sparql_url:
            self.forwarder = Forwarder(
                limits.sparql_url, ledger_url=settings.ledger_url, base_iri=settings.base_iri
            )
        self.worker = GraphWorker(
            WorkerConfig(
                home=str(settings.home),
                ledger_url=settings.ledger_url,
                store_path=None if limits.sparql_url else str(settings.store_path),
                base_iri=settings.base_iri,
                store_wait_s=limits.store_wait_s,
                idle_close_s=limits.store_idle_s,
                workers=limits.workers,
                memory_mb=limits.memory_mb,
            )
        )

    def ledger_dags(self) -> set[str]:
        """Every DAG with a recorded run."""
        from sqlalchemy import select

        from twinprov.provenance.ledger import Ledger
        from twinprov.provenance.ledger import runs as runs_table

        rows = Ledger(self.settings.ledger_url).select_rows(select(runs_table.c.dag_id).distinct())
        return {row[0] for row in rows}

    def answer(
        self,
        text: str,
        permitted_dags: frozenset[str],
        *,
        default_graph_uri: tuple[str, ...] = (),
        named_graph_uri: tuple[str, ...] = (),
        accept: str | None = None,
        fmt: str | None = None,
    ) -> Rendered:
        """Check and answer one query (errors as in :meth:`GraphWorker.query`)."""
        lim = self.limits
        req = QueryRequest(
            text=text,
            permitted_dags=permitted_dags,
            default_graph_uri=default_graph_uri,
            named_graph_uri=named_graph_uri,
            accept=accept,
            fmt=fmt,
            row_cap=lim.row_cap,
            time_limit_s=lim.time_limit_s,
            max_chars=lim.max_query_chars,
            max_answer_bytes=lim.answer_max_bytes,
        )
        if self.forwarder is not None:
            started = time.monotonic()
            checked = self.worker.check(CheckRequest(text, lim.max_query_chars, lim.time_limit_s))
            self.catch_up_remote()
            left = lim.time_limit_s - (time.monotonic() - started)
            if left <= 0:
                raise TimeLimitError(lim.time_limit_s)
            return self.forwarder.answer(req, checked, time_limit_s=left)
        return self.worker.query(req)

    def catch_up_remote(self) -> int:
        """Load runs published while the SPARQL server was away (as the embedded store's owner
        does before answering); at most every :attr:`CATCH_UP_EVERY_S`, one thread at a time.
        A failure is logged: the query is still answered from what the server holds."""
        if not self.settings.sparql_gsp_url:
            return 0  # read-only server: the writers' `twinprov publish --pending` catches up
        now = time.monotonic()
        if now - self._caught_up_at < self.CATCH_UP_EVERY_S:
            return 0
        if not self._catching_up.acquire(blocking=False):
            return 0
        try:
            from twinprov.app.publish import catch_up
            from twinprov.provenance.store import open_store

            with open_store(self.settings) as store:
                loaded = catch_up(self.settings, store)
            self._caught_up_at = time.monotonic()
            if loaded:
                log.info("twinprov: loaded %d pending run graph(s) into the SPARQL server", loaded)
            return loaded
        except Exception as e:
            log.warning("twinprov: catch-up of the SPARQL server failed: %s", e)
            return 0
        finally:
            self._catching_up.release()

    def close(self) -> None:
        """Stop the store owner / close connections."""
        self.worker.stop()
        if self.forwarder is not None:
            self.forwarder.close()


_service: ProvenanceService | None = None
_lock = threading.Lock()


def service() -> ProvenanceService:
    """This process's service (made on first use)."""
    global _service
    with _lock:
        if _service is None:
            _service = ProvenanceService(Settings.load(), EndpointSettings.from_airflow())
        return _service
