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
* **Checks** (:func:`twinprov.provenance.sparql_check.check_query`: size, nesting, read-only,
  no ``SERVICE``; rdflib parses some queries, which can take seconds of CPU) run in the child,
  within the time limit: the API server's threads and event loop never parse a query. With a
  forwarding endpoint the child only checks (:meth:`GraphWorker.check`) and holds no store.
* **Several queries at a time.** The child answers up to ``workers`` queries at once, one thread
  each (pyoxigraph releases the GIL while it evaluates; the one store is shared, as one
  read-write owner must), threads with large stacks (Oxigraph's parser recurses).
* **Bounded memory.** The child's address space is limited (``RLIMIT_AS``, ``memory_mb``): a
  query that needs more gets a ``MemoryError`` (answered 413) or ends the child (the parent
  retries the query once, then answers 413); the host is never driven out of memory.
* **Permissions** are applied inside the child, to the graphs the store really holds: the parent
  sends the DAG ids the user may read, the child keeps only the run graphs of those DAGs (see
  :func:`twinprov.provenance.sparql_dataset.choose_dataset`).

The parent (:class:`GraphWorker`) talks to the child over its stdin/stdout through
:class:`multiprocessing.connection.Connection` ends of the two pipes (pickled messages, framed by
the stdlib; both ends are this module, in processes of one deployment). Every request carries an
id; replies come back with it, in any order; a reader thread of the parent hands them out. When
one query passes its time limit the parent kills the child (a running evaluation cannot be
stopped otherwise); the other queries it was answering are sent again to the next child, within
their own time limits.
"""

from __future__ import annotations

__all__ = ["CheckRequest", "GraphWorker", "QueryCrashedError", "QueryRequest", "WorkerConfig"]

import atexit
import itertools
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
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
    check_query,
    explain_syntax_error,
)
from twinprov.provenance.sparql_dataset import choose_dataset, query_options
from twinprov.provenance.sparql_results import (
    AnswerTooLargeError,
    Rendered,
    TimeLimitError,
    render,
)

log = logging.getLogger(__name__)

_GRACE_S = 1.0
"""How long after the time limit the parent waits for the cut answer before stopping the child."""

_STACK_BYTES = 64 * 2**20
"""Stack of each query thread: Oxigraph's parser recurses once per nested operator."""

_MAX_ATTEMPTS = 4
"""How many children one query may be sent to (it is sent again when another query's time limit
ended the child it was on)."""


@dataclass(frozen=True)
class WorkerConfig:
    """What the child needs: where things are (from :class:`twinprov.provenance.config.Settings`;
    no ``store_path``: the child only checks queries), how long to wait for, and to keep, the
    store, how many queries it answers at once and how much memory it may use."""

    home: str
    ledger_url: str
    store_path: str | None
    base_iri: str
    store_wait_s: float = 5.0
    idle_close_s: float = 2.0
    catchup_timeout_s: float = 300.0
    workers: int = 6
    memory_mb: int = 0


@dataclass(frozen=True)
class QueryRequest:
    """One query (checked by the child), with the user's reach and the limits."""

    text: str
    permitted_dags: frozenset[str]
    default_graph_uri: tuple[str, ...] = ()
    named_graph_uri: tuple[str, ...] = ()
    accept: str | None = None
    fmt: str | None = None
    row_cap: int = 10000
    time_limit_s: float = 10.0
    max_chars: int = 65536
    max_answer_bytes: int | None = None


@dataclass(frozen=True)
class CheckRequest:
    """Check (and parse) one query only: for a forwarding endpoint."""

    text: str
    max_chars: int = 65536
    time_limit_s: float = 10.0


class QueryCrashedError(AnswerTooLargeError):
    """The query ended the query process twice: out of memory, or a crash of the engine
    (HTTP 413)."""


# -- framing -----------------------------------------------------------------------------------


def _recv(conn: Connection, timeout: float | None) -> Any:
    """The next message from ``conn``; None at end of file; TimeoutError when nothing came
    within ``timeout`` seconds (None: wait as long as it takes)."""
    if timeout is not None and not conn.poll(max(timeout, 0.0)):
        raise TimeoutError
    try:
        return conn.recv()
    except (EOFError, OSError):
        return None


_ERRORS: dict[str, type[QueryError]] = {
    "busy": StoreError,
    "refused": QueryRefusedError,
    "malformed": MalformedQueryError,
    "not-acceptable": NotAcceptableError,
    "too-large": AnswerTooLargeError,
}


# -- the parent's side -------------------------------------------------------------------------


class _Child:
    """One running child process, the requests sent to it and the thread reading its replies."""

    def __init__(self, config: WorkerConfig) -> None:
        child_in, to_child = os.pipe()
        from_child, child_out = os.pipe()
        env = {**os.environ, "MALLOC_ARENA_MAX": "2"}  # fewer malloc arenas: less address space
        env.setdefault("RUST_BACKTRACE", "0")  # an allocation failure: one line in the log
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "twinprov.airflow.graph_worker"],
                stdin=child_in,
                stdout=child_out,
                close_fds=True,
                env=env,
            )
        except BaseException:
            os.close(to_child)
            os.close(from_child)
            raise
        finally:
            os.close(child_in)
            os.close(child_out)
        self.to_child = Connection(to_child, readable=False)
        self.from_child = Connection(from_child, writable=False)
        self.pending: dict[int, queue.Queue[Any]] = {}
        self.lock = threading.Lock()
        self.ended = False
        self.killed = False
        """Stopped by the parent (another query's time limit), not by a crash."""
        self.to_child.send(config)
        self.reader = threading.Thread(
            target=self._read, name="twinprov-graph-replies", daemon=True
        )
        self.reader.start()

    @property
    def alive(self) -> bool:
        return not self.ended and self.proc.poll() is None

    def submit(self, rid: int, request: Any) -> queue.Queue[Any]:
        replies: queue.Queue[Any] = queue.Queue()
        with self.lock:
            if self.ended:
                raise EOFError
            self.pending[rid] = replies
            self.to_child.send((rid, request))
        return replies

    def forget(self, rid: int) -> None:
        with self.lock:
            self.pending.pop(rid, None)

    def _read(self) -> None:
        while True:
            msg = _recv(self.from_child, None)
            if msg is None:
                break
            rid, payload = msg
            with self.lock:
                replies = self.pending.get(rid)
            if replies is not None:
                replies.put(payload)
        with self.lock:
            self.ended = True
            waiting, self.pending = list(self.pending.values()), {}
            for conn in (self.to_child, self.from_child):
                conn.close()
        for replies in waiting:
            replies.put(None)  # the child ended under these requests

    def kill(self) -> None:
        self.killed = True
        if self.proc.poll() is None:
            self.proc.kill()  # the OS releases the store's lock with the process
        self.proc.wait()

    def stop(self) -> None:
        with self.lock:
            if not self.ended:
                self.to_child.close()  # end of input: the child closes the store and exits
                self.ended = True
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


class GraphWorker:
    """The API server's handle on the child process (started on first use); thread-safe: up to
    ``config.workers`` queries at a time (the caller admits them)."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self._child: _Child | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count()
        atexit.register(self.stop)

    def _current(self) -> _Child:
        with self._lock:
            if self._child is None or not self._child.alive:
                self._child = _Child(self.config)
            return self._child

    def stop(self) -> None:
        """Stop the child (it closes the store on its way out)."""
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            child.stop()

    def _kill(self, child: _Child) -> None:
        with self._lock:
            if self._child is child:
                self._child = None
        child.kill()

    def _send(self, request: Any) -> tuple[_Child, int, queue.Queue[Any]]:
        for _ in range(3):
            child = self._current()
            rid = next(self._ids)
            try:
                return child, rid, child.submit(rid, request)
            except (EOFError, OSError):
                self._kill(child)
        raise StoreError("the graph store process cannot be started; retry")

    @staticmethod
    def _get(replies: queue.Queue[Any], timeout: float) -> Any:
        try:
            return replies.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise TimeoutError from None

    def check(self, request: CheckRequest) -> CheckedQuery:
        """Check and parse a query in the child, within the time limit (forwarding endpoint).

        Raises:
            QueryRefusedError: the query is malformed or refused (HTTP 400).
            TimeLimitError: the check took longer than the time limit (HTTP 503).
        """
        msg = self._call(request, wait_start=False)
        checked: CheckedQuery = msg[1]
        return checked

    def query(self, request: QueryRequest) -> Rendered:
        """Check and answer one query in the child.

        Raises:
            QueryRefusedError: the query is malformed or refused (HTTP 400).
            NotAcceptableError: no acceptable format fits (HTTP 406).
            AnswerTooLargeError: a row is larger than the answer limit, or the query needed more
                memory than the child may use (HTTP 413).
            TimeLimitError: nothing came within the time limit; the child was stopped (HTTP 503).
            StoreError: the store is held by another process, or the child failed (HTTP 503).
            QueryError: the query failed while it ran (HTTP 500).
        """
        msg = self._call(request, wait_start=True)
        rendered: Rendered = msg[1]
        return rendered

    def _call(self, request: QueryRequest | CheckRequest, *, wait_start: bool) -> Any:
        limit = request.time_limit_s
        deadline = None if wait_start else time.monotonic() + limit
        crashes = 0
        for _ in range(_MAX_ATTEMPTS):
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeLimitError(limit)
                request = replace(request, time_limit_s=remaining)
            child, rid, replies = self._send(request)
            # a query waits for the store (opened, caught up) before its time runs; a check never
            start_by = time.monotonic() + (
                self.config.store_wait_s + self.config.catchup_timeout_s + _GRACE_S
                if wait_start
                else 0.0
            )
            try:
                while True:
                    if deadline is None:
                        msg = self._get(replies, start_by - time.monotonic())
                    else:  # started: the time limit runs
                        wait = deadline + _GRACE_S - time.monotonic()
                        msg = self._get(replies, max(wait, start_by - time.monotonic()))
                    if msg is None or msg[0] != "started":
                        break
                    if deadline is None:
                        deadline = time.monotonic() + limit
                    start_by = 0.0
            except TimeoutError:
                self._kill(child)
                if deadline is not None:
                    raise TimeLimitError(limit) from None
                raise StoreError("the graph store did not become ready in time; retry") from None
            except (OSError, EOFError, pickle.UnpicklingError) as e:
                self._kill(child)
                raise StoreError(f"the graph store process failed ({e}); retry") from e
            finally:
                child.forget(rid)
            if msg is None:  # the child ended while it had this request
                if child.killed:
                    continue  # another query's time limit: send this one again
                child.proc.wait()  # it crashed (or ran out of memory): once more, then refuse
                crashes += 1
                if crashes < 2:
                    continue
                raise QueryCrashedError(self._crash_message(child))
            if msg[0] in ("done", "checked"):
                return msg
            _, kind, message = msg
            raise _ERRORS.get(kind, QueryError)(message)
        raise StoreError("the graph store process was restarted too often under this query; retry")

    def _crash_message(self, child: _Child) -> str:
        mb = self.config.memory_mb
        cause = (
            f"it likely needed more than the memory limit of {mb} MiB ([twinprov] query_memory_mb)"
            if mb
            else "it crashed the query engine"
        )
        return (
            f"the query ended the query process twice ({_exit_status(child.proc.returncode)}): "
            f"{cause}; narrow it (fewer or shorter values, a LIMIT)"
        )


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
    from twinprov.airflow.graph_worker import main as _main

    _main()
