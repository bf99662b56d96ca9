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
  :func:`twinprov.provenance.sparql_guard.choose_dataset`).

The parent (:class:`GraphWorker`) talks to the child over its stdin/stdout, one request at a time,
with length-prefixed pickles (both ends are this module, in processes of one deployment).
"""

from __future__ import annotations

__all__ = ["GraphWorker", "QueryRequest", "WorkerConfig"]

import atexit
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from twinprov.provenance.errors import QueryError, StoreError
from twinprov.provenance.sparql_guard import (
    CheckedQuery,
    MalformedQueryError,
    NotAcceptableError,
    QueryRefusedError,
    Rendered,
    TimeLimitError,
    choose_dataset,
    explain_syntax_error,
    query_options,
    render,
)

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
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


def _send(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    """``n`` bytes from ``fd``; None at end of file; TimeoutError past ``deadline``."""
    chunks: list[bytes] = []
    while n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(fd: int, deadline: float | None) -> Any:
    head = _read_exact(fd, _HEADER.size, deadline)
    if head is None:
        return None
    (size,) = _HEADER.unpack(head)
    body = _read_exact(fd, size, deadline)
    if body is None:
        return None
    return pickle.loads(body)


# -- the parent's side -------------------------------------------------------------------------


class GraphWorker:
    """The API server's handle on the store-owning child process (started on first use)."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        atexit.register(self.stop)

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "twinprov.airflow.graph_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            close_fds=True,
        )
        assert self._proc.stdin is not None
        _send(self._proc.stdin, self.config)
        return self._proc

    def stop(self) -> None:
        """Stop the child (it closes the store on its way out)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.close()  # end of input: the child closes the store and exits
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()  # the OS releases the store's lock with the process
            proc.wait()

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
        proc = self._ensure()
        assert proc.stdin is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        running = False
        try:
            _send(proc.stdin, request)
            start_by = self.config.store_wait_s + self.config.catchup_timeout_s + _GRACE_S
            msg = _recv(fd, time.monotonic() + start_by)
            if msg is not None and msg[0] == "started":
                running = True
                msg = _recv(fd, time.monotonic() + request.time_limit_s + _GRACE_S)
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
                accept=req.accept,
                fmt=req.fmt,
                row_cap=req.row_cap,
                deadline=started + req.time_limit_s,
                form=req.query.form,
            )
        except SyntaxError as e:
            raise explain_syntax_error(req.query.text, str(e)) from e
        except (OSError, ValueError, RuntimeError) as e:
            raise QueryError(f"the query failed: {e}") from e


def _serve(config: WorkerConfig, fd_in: int, out: IO[bytes]) -> None:
    owner = _Owner(config)
    try:
        while True:
            timeout = None
            if owner.is_open:
                timeout = max(owner.idle_since + config.idle_close_s - time.monotonic(), 0.0)
            try:
                req = _recv(fd_in, None if timeout is None else time.monotonic() + timeout)
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
                _send(out, ("error", "busy", str(e)))
                continue
            except Exception as e:  # a broken ledger must not kill the owner: report it
                log.exception("twinprov: catching up the graph store failed")
                _send(out, ("error", "failed", f"catching up the graph store failed: {e}"))
                continue
            _send(out, ("started",))
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
            _send(out, reply)
            owner.idle_since = time.monotonic()
            if config.idle_close_s <= 0:
                owner.close()
    finally:
        owner.close()


def main() -> None:
    """Entry point of the child (``python -m twinprov.airflow.graph_worker``)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # anything printed goes to stderr, never into the replies
    fd_in = sys.stdin.fileno()
    config = _recv(fd_in, None)
    if not isinstance(config, WorkerConfig):
        log.error("twinprov graph worker: expected a WorkerConfig first, got %r", type(config))
        return
    _serve(config, fd_in, out)


if __name__ == "__main__":
    # run the importable module, not this __main__ copy, so that pickled classes are the same
    from twinprov.airflow.graph_worker import main as _main

    _main()
