"""The child process of :mod:`twinprov.airflow.graph_worker`: it owns the embedded graph store,
checks queries and answers them, several at a time, within the limits the parent set (see the
parent module's docstring for why it is a process of its own). Started as
``python -m twinprov.airflow.graph_worker_child``; talks to the parent over its stdin/stdout."""

from __future__ import annotations

__all__ = ["main"]

import logging
import os
import queue
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from twinprov.airflow.graph_worker import (
    _STACK_BYTES,
    CheckRequest,
    QueryRequest,
    WorkerConfig,
    _recv,
)
from twinprov.airflow.negotiation import Negotiation, NotAcceptableError
from twinprov.provenance.errors import QueryError, StoreError
from twinprov.provenance.sparql_check import (
    CheckedQuery,
    MalformedQueryError,
    QueryRefusedError,
    check_query,
    explain_syntax_error,
)
from twinprov.provenance.sparql_dataset import choose_dataset, query_options
from twinprov.provenance.sparql_results import (
    AnswerTooLargeError,
    Rendered,
    render,
)

log = logging.getLogger(__name__)


# -- the child's side --------------------------------------------------------------------------


class _Owner:
    """The store and what the child knows about it, between queries; shared by the query
    threads (opening, catching up and closing are done under one lock, closing only when no
    query runs)."""

    def __init__(self, config: WorkerConfig) -> None:
        from twinprov.provenance.config import Settings
        from twinprov.provenance.ids import Ids
        from twinprov.provenance.store import EmbeddedStore

        self.config = config
        self.settings = Settings(
            home=Path(config.home),
            ledger_url=config.ledger_url,
            store_path=Path(config.store_path or "."),
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
        self._cond = threading.Condition()
        self.active = 0

    def begin(self) -> None:
        """Before a query: the store open and caught up with the ledger."""
        with self._cond:
            self.open()
            self.catch_up()
            self.active += 1

    def end(self) -> None:
        """After a query."""
        with self._cond:
            self.active -= 1
            self.idle_since = time.monotonic()
            if self.config.idle_close_s <= 0 and self.active == 0:
                self.close()

    def idle_timeout(self) -> float:
        """How long the main thread may wait for a request before it looks at the store again
        (a query thread may open the store at any time: never longer than a second)."""
        with self._cond:
            if not self.is_open or self.active:
                return min(max(self.config.idle_close_s, 0.05), 1.0)
            return max(self.idle_since + self.config.idle_close_s - time.monotonic(), 0.0)

    def close_if_idle(self) -> None:
        with self._cond:
            idle_for = time.monotonic() - self.idle_since
            if self.active == 0 and idle_for >= self.config.idle_close_s - 0.001:
                self.close()

    def shutdown(self) -> None:
        with self._cond:
            self.close()

    def out_of_memory(self, e: BaseException) -> str:
        mb = self.config.memory_mb
        limit = f"the memory limit of {mb} MiB ([twinprov] query_memory_mb)" if mb else "memory"
        return f"the query needed more than {limit} ({e or 'MemoryError'}); narrow it"

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
                create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
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

    def answer(self, req: QueryRequest, query: CheckedQuery, started: float) -> Rendered:
        choice = choose_dataset(
            query,
            req.default_graph_uri,
            req.named_graph_uri,
            self.permitted_graphs(req.permitted_dags),
        )
        try:
            result = self.embedded.store.query(query.text, **query_options(choice))
            return render(
                result,
                choose=Negotiation(req.accept, req.fmt).choose,
                row_cap=req.row_cap,
                deadline=started + req.time_limit_s,
                form=query.form,
                max_bytes=req.max_answer_bytes,
            )
        except SyntaxError as e:
            raise explain_syntax_error(query.text, str(e)) from e
        except (OSError, ValueError, RuntimeError) as e:
            raise QueryError(f"the query failed: {e}") from e


def _answer_one(owner: _Owner | None, request: Any, send: Any) -> None:
    """Check, then answer, one request; every outcome is sent as a reply."""
    if isinstance(request, CheckRequest):
        try:
            send(("checked", check_query(request.text, max_chars=request.max_chars, parse=True)))
        except QueryRefusedError as e:
            send(
                ("error", "malformed" if isinstance(e, MalformedQueryError) else "refused", str(e))
            )
        except RecursionError:
            send(("error", "malformed", "malformed SPARQL query: it nests too deep to parse"))
        return
    assert owner is not None
    try:
        owner.begin()
    except StoreError as e:
        send(("error", "busy", str(e)))
        return
    except Exception as e:  # a broken ledger must not kill the owner: report it
        log.exception("twinprov: catching up the graph store failed")
        send(("error", "failed", f"catching up the graph store failed: {e}"))
        return
    try:
        send(("started",))
        started = time.monotonic()
        try:
            checked = check_query(request.text, max_chars=request.max_chars)
            reply: tuple[Any, ...] = ("done", owner.answer(request, checked, started))
        except MalformedQueryError as e:
            reply = ("error", "malformed", str(e))
        except QueryRefusedError as e:
            reply = ("error", "refused", str(e))
        except NotAcceptableError as e:
            reply = ("error", "not-acceptable", str(e))
        except AnswerTooLargeError as e:
            reply = ("error", "too-large", str(e))
        except MemoryError as e:
            reply = ("error", "too-large", owner.out_of_memory(e))
        except RecursionError:
            reply = ("error", "malformed", "malformed SPARQL query: it nests too deep to parse")
        except QueryError as e:
            reply = ("error", "failed", str(e))
        except Exception as e:  # whatever else: an answer, not a dead thread
            log.exception("twinprov: a query failed")
            reply = ("error", "failed", f"the query failed: {e}")
        try:
            send(reply)
        except MemoryError as e:
            send(("error", "too-large", owner.out_of_memory(e)))
    finally:
        owner.end()


def _work(owner: _Owner | None, jobs: queue.Queue[Any], send_reply: Any) -> None:
    while True:
        rid, request = jobs.get()

        def send(payload: tuple[Any, ...], rid: int = rid) -> None:
            send_reply(rid, payload)

        try:
            _answer_one(owner, request, send)
        except (OSError, EOFError):  # the parent went away
            return


def _serve(config: WorkerConfig, requests: Connection, out: Connection) -> None:
    owner = _Owner(config) if config.store_path else None
    jobs: queue.Queue[Any] = queue.Queue()
    send_lock = threading.Lock()

    def send_reply(rid: int, payload: tuple[Any, ...]) -> None:
        with send_lock:
            out.send((rid, payload))

    threading.stack_size(_STACK_BYTES)
    for i in range(max(config.workers, 1)):
        threading.Thread(
            target=_work, args=(owner, jobs, send_reply), name=f"query-{i}", daemon=True
        ).start()
    try:
        while True:
            timeout = owner.idle_timeout() if owner is not None else None
            try:
                msg = _recv(requests, timeout)
            except TimeoutError:
                if owner is not None:
                    owner.close_if_idle()  # idle: let other processes have the store
                continue
            if msg is None:
                return
            jobs.put(msg)
    finally:
        if owner is not None:
            owner.shutdown()


def _limit_memory(mb: int) -> None:
    if mb <= 0:
        return
    import resource

    limit = mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


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
    import rdflib.plugins.sparql.parser  # noqa: F401  (imported once, before the threads)

    _limit_memory(config.memory_mb)
    _serve(config, requests, out)


if __name__ == "__main__":
    # run the importable module, not this __main__ copy, so that pickled classes are the same
    from twinprov.airflow.graph_worker_child import main as _main

    _main()
