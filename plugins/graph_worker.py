"""The embedded graph store's owner: a child process of the API server that answers SPARQL.

Imports no Airflow (it runs the provenance core only). Why a separate process:

* **Time limit.** pyoxigraph cannot interrupt a query once Oxigraph evaluates it: a pathological
  query would hold an API-server thread (and the store) for as long as it runs. In a child process
  it can be stopped: the parent kills it at the time limit and starts a new one on the next query.
* **One owner.** An embedded Oxigraph store is opened by one process at a time (DESIGN §1). This
  child opens it on the first query and **closes it after ``idle_close_s`` seconds without
  queries**, so that ``twinprov query``, ``twinprov publish`` and the workflows' publish tasks can
  open it between bursts of queries. When another process holds it, the child retries with
  backoff for ``store_wait_s`` seconds, then the endpoint answers 503 "store busy, retry". A
  publish task that finds the store held by this child leaves its run pending in the ledger
  (DESIGN: the store is an index of the ledger): before every query the child loads every pending
  run (:func:`twinprov.app.publish.catch_up`), so nothing published is missing from an answer.
* **Permissions** are applied inside the child, to the graphs the store really holds: the parent
  sends the DAG ids the user may read, the child keeps only the run graphs of those DAGs (see
  :func:`twinprov.provenance.sparql_dataset.choose_dataset`).

The parent (:class:`GraphWorker`) talks to the child over its stdin/stdout, one request at a time,
through :class:`multiprocessing.connection.Connection` ends of the two pipes (pickled messages,
framed by the stdlib; both ends are this module, in processes of one deployment).
"""

from __future__ import annotations

__all__ = ["GraphWorker", "QueryRequest", "WorkerConfig"]

import atexit
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from twinprov.airflow.negotiation import Negotiation, NotAcceptableError
from twinprov.provenance.errors import QueryError, StoreError
from twinprov.provenance.sparql_check import (
    CheckedQuery,
    MalformedQueryError,
    QueryRefusedError,
    explain_syntax_error,
)
from twinprov.provenance.sparql_dataset import choose_dataset, query_options
from twinprov.provenance.sparql_results import Rendered, TimeLimitError, render

log = logging.getLogger(__name__)

_GRACE_S = 1.0
"""How long after the time limit the parent waits for the cut answer before stopping the child."""


@dataclass(frozen=True)
class WorkerConfig:
    """What the child needs: where things are (from :class:`twinprov.provenance.config.Settings`)
    and how
    long to wait for, and to keep, the store."""

    home: str
    ledger_url: str
    store_path: str
    base_iri: str
    store_wait_s: float = 5.0
    idle_close_s: float = 2.0
    catchup_timeout_s: float = 300.0


@dataclass(frozen=True)
class QueryRequest:
    """One query, checked, with the user's reach and the limits."""

    query: CheckedQuery
    permitted_dags: frozenset[str]
    default_graph_uri: tuple[str, ...] = ()
    named_graph_uri: tuple[str, ...] = ()
    accept: str | None = None
    fmt: str | None = None
    row_cap: int = 10000
    time_limit_s: float = 10.0


# -- framing -----------------------------------------------------------------------------------


def _recv(conn: Connection, timeout: float | None) -> Any:
    """The next message from ``conn``; None at end of file; TimeoutError when nothing came
    within ``timeout`` seconds (None: wait as long as it takes)."""
    if timeout is not None and not conn.poll(max(timeout, 0.0)):
        raise TimeoutError
    try:
        return conn.recv()
    except EOFError:
        return None


# -- the parent's side -------------------------------------------------------------------------


class GraphWorker:
    """The API server's handle on the store-owning child process (started on first use)."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_child: Connection | None = None
        self._from_child: Connection | None = None
        self._lock = threading.Lock()
        atexit.register(self.stop)

    def _ensure(self) -> tuple[Connection, Connection]:
        """The connections to and from a running child (started if there is none)."""
        if self._proc is not None and self._proc.poll() is None:
            assert self._to_child is not None and self._from_child is not None
            return self._to_child, self._from_child
        self._close_connections()
        child_in, to_child = os.pipe()
        from_child, child_out = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "twinprov.airflow.graph_worker"],
                stdin=child_in,
                stdout=child_out,
                close_fds=True,
            )
        except BaseException:
            os.close(to_child)
            os.close(from_child)
            raise
        finally:
            os.close(child_in)
            os.close(child_out)
        self._to_child = Connection(to_child, readable=False)
        self._from_child = Connection(from_child, writable=False)
        self._to_child.send(self.config)
        return self._to_child, self._from_child

    def _close_connections(self) -> None:
        for conn in (self._to_child, self._from_child):
            if conn is not None:
                conn.close()
        self._to_child = self._from_child = None

    def stop(self) -> None:
        """Stop the child (it closes the store on its way out)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            self._close_connections()
            return
        try:
            self._close_connections()  # end of input: the child closes the store and exits
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()  # the OS releases the store's lock with the process
            proc.wait()
        self._close_connections()

    def query(self, request: QueryRequest) -> Rendered:
        """Answer one query through the child.

        Raises:
            QueryRefusedError: the query is malformed or refused (HTTP 400).
            NotAcceptableError: no acceptable format fits (HTTP 406).
            TimeLimitError: nothing came within the time limit; the child was stopped (HTTP 503).
            StoreError: the store is held by another process, or the child failed (HTTP 503).
            QueryError: the query failed while it ran (HTTP 500).
        """
        wait = request.time_limit_s + self.config.store_wait_s + 2 * _GRACE_S
        if not self._lock.acquire(timeout=wait):
            raise StoreError("the graph store is busy answering other queries; retry")
        try:
            return self._exchange(request)
        finally:
            self._lock.release()

    def _exchange(self, request: QueryRequest) -> Rendered:
        to_child, from_child = self._ensure()
        running = False
        try:
            to_child.send(request)
            start_by = self.config.store_wait_s + self.config.catchup_timeout_s + _GRACE_S
            msg = _recv(from_child, start_by)
            if msg is not None and msg[0] == "started":
                running = True
                msg = _recv(from_child, request.time_limit_s + _GRACE_S)
        except TimeoutError:
            self._kill()
            if running:
                raise TimeLimitError(request.time_limit_s) from None
            raise StoreError("the graph store did not become ready in time; retry") from None
        except (OSError, EOFError, pickle.UnpicklingError) as e:
            self._kill()
            raise StoreError(f"the graph store process failed ({e}); retry") from e
        if msg is None:
            self._kill()
            raise StoreError(
                "the graph store process ended unexpectedly (the query may have crashed it); retry"
            )
        if msg[0] == "done":
            rendered: Rendered = msg[1]
            return rendered
        _, kind, message = msg
        raise {
            "busy": StoreError,
            "refused": QueryRefusedError,
            "malformed": MalformedQueryError,
            "not-acceptable": NotAcceptableError,
        }.get(kind, QueryError)(message)


# -- the child's side --------------------------------------------------------------------------


class _Owner:
    """The store and what the child knows about it, between queries."""

    def __init__(self, config: WorkerConfig) -> None:
        from twinprov.provenance.config import Settings
        from twinprov.provenance.ids import Ids
        from twinprov.provenance.store import EmbeddedStore

        self.config = config
        self.settings = Settings(
            home=Path(config.home),
            ledger_url=config.ledger_url,
            store_path=Path(config.store_path),
            base_iri=config.base_iri,
        )
        self.run_ns = Ids(config.base_iri).run_ns
        self.embedded = EmbeddedStore(self.settings.store_path)
        self._ctx: Any = None
        self.graph_dags: dict[str, str | None] | None = None
        self.idle_since = time.monotonic()
        self.noop_pending: tuple[Any, ...] | None = None
        self._ledger_engine: Any = None
        self._data_version: Any = None
        self._caught_up = False

    @property
    def is_open(self) -> bool:
        return self._ctx is not None

    def open(self) -> None:
        """Open the store, retrying with backoff while another process holds it."""
        if self._ctx is not None:
            return
        give_up = time.monotonic() + self.config.store_wait_s
        delay = 0.02
        while True:
            ctx = self.embedded.open()
            try:
                ctx.__enter__()
            except StoreError:
                if time.monotonic() + delay > give_up:
                    raise StoreError(
                        f"the graph store {self.settings.store_path} is held by another process "
                        f"(a `twinprov` command or a publish task) for more than "
                        f"{self.config.store_wait_s:g} s; store busy, retry"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            self._ctx = ctx
            self.graph_dags = None  # others may have written it while it was closed
            self.noop_pending = None
            self._caught_up = False
            return

    def close(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            ctx.__exit__(None, None, None)

    def _ledger(self) -> Any:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import StaticPool

        if self._ledger_engine is None:
            # one connection kept for these checks (the ledger's own engine opens one per use)
            url = self.settings.ledger_url
            self._ledger_engine = (
                create_engine(url, poolclass=StaticPool)
                if url.startswith("sqlite")
                else create_engine(url, pool_size=1)
            )
        return self._ledger_engine

    def _ledger_unchanged(self, conn: Any) -> bool:
        """SQLite only: nobody committed to the ledger since the last look (``data_version``)."""
        if conn.dialect.name != "sqlite":
            return False
        from sqlalchemy import text

        version = conn.execute(text("PRAGMA data_version")).scalar()
        unchanged = version == self._data_version
        self._data_version = version
        return unchanged

    def _pending(self) -> tuple[Any, ...] | None:
        """How many published runs the store lacks and the latest publication time; None when
        the ledger has not changed since the last look (nothing new can be pending)."""
        from sqlalchemy import func, or_, select

        from twinprov.provenance.ledger import runs as runs_table

        t = runs_table
        stmt = select(func.count(), func.max(t.c.published_at)).where(
            t.c.published_digest.is_not(None),
            or_(t.c.stored_digest.is_(None), t.c.stored_digest != t.c.published_digest),
        )
        with self._ledger().connect() as conn:
            if self._ledger_unchanged(conn) and self._caught_up:
                return None
            return tuple(conn.execute(stmt).one())

    def catch_up(self) -> None:
        """Load every run published since the store last saw the ledger."""
        from twinprov.app.publish import catch_up

        pending = self._pending()
        if pending is None:
            return
        self._caught_up = False
        if not pending[0] or pending == self.noop_pending:
            self._caught_up = True
            return
        loaded = catch_up(self.settings, self.embedded)
        self._caught_up = True
        if loaded:
            self.graph_dags = None
            self.noop_pending = None
        else:  # pending runs whose files are gone: do not retry them before the ledger changes
            self.noop_pending = pending

    def _graphs_by_dag(self) -> dict[str, str | None]:
        if self.graph_dags is None:
            found: dict[str, str | None] = {}
            for g in self.embedded.graphs():
                dag: str | None = None
                if g.startswith(self.run_ns):
                    dag_q, sep, run_q = g[len(self.run_ns) :].partition("/")
                    if sep and run_q and "/" not in run_q:
                        dag = unquote(dag_q)
                found[g] = dag
            self.graph_dags = found
        return self.graph_dags

    def permitted_graphs(self, dags: frozenset[str]) -> frozenset[str] | None:
        """The graphs the user may read, or None when that is every graph of the store."""
        by_dag = self._graphs_by_dag()
        if {d for d in by_dag.values() if d is not None} <= dags:
            return None
        return frozenset(g for g, d in by_dag.items() if d is not None and d in dags)

    def answer(self, req: QueryRequest, started: float) -> Rendered:
        choice = choose_dataset(
            req.query,
            req.default_graph_uri,
            req.named_graph_uri,
            self.permitted_graphs(req.permitted_dags),
        )
        try:
            result = self.embedded.store.query(req.query.text, **query_options(choice))
            return render(
                result,
                choose=Negotiation(req.accept, req.fmt).choose,
                row_cap=req.row_cap,
                deadline=started + req.time_limit_s,
                form=req.query.form,
            )
        except SyntaxError as e:
            raise explain_syntax_error(req.query.text, str(e)) from e
        except (OSError, ValueError, RuntimeError) as e:
            raise QueryError(f"the query failed: {e}") from e


def _serve(config: WorkerConfig, requests: Connection, out: Connection) -> None:
    owner = _Owner(config)
    try:
        while True:
            timeout = None
            if owner.is_open:
                timeout = max(owner.idle_since + config.idle_close_s - time.monotonic(), 0.0)
            try:
                req = _recv(requests, timeout)
            except TimeoutError:
                owner.close()  # idle: let other processes have the store
                continue
            if req is None:
                return
            started = time.monotonic()
            try:
                owner.open()
                owner.catch_up()
            except StoreError as e:
                out.send(("error", "busy", str(e)))
                continue
            except Exception as e:  # a broken ledger must not kill the owner: report it
                log.exception("twinprov: catching up the graph store failed")
                out.send(("error", "failed", f"catching up the graph store failed: {e}"))
                continue
            out.send(("started",))
            started = time.monotonic()
            try:
                reply: tuple[Any, ...] = ("done", owner.answer(req, started))
            except MalformedQueryError as e:
                reply = ("error", "malformed", str(e))
            except QueryRefusedError as e:
                reply = ("error", "refused", str(e))
            except NotAcceptableError as e:
                reply = ("error", "not-acceptable", str(e))
            except QueryError as e:
                reply = ("error", "failed", str(e))
            out.send(reply)
            owner.idle_since = time.monotonic()
            if config.idle_close_s <= 0:
                owner.close()
    finally:
        owner.close()


def main() -> None:
    """Entry point of the child (``python -m twinprov.airflow.graph_worker``)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    out = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # anything printed goes to stderr, never into the replies
    requests = Connection(os.dup(sys.stdin.fileno()), writable=False)
    config = _recv(requests, None)
    if not isinstance(config, WorkerConfig):
        log.error("twinprov graph worker: expected a WorkerConfig first, got %r", type(config))
        return
    _serve(config, requests, out)


if __name__ == "__main__":
    # run the importable module, not this __main__ copy, so that pickled classes are the same
    from twinprov.airflow.graph_worker import main as _main

    _main()
