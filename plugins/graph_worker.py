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
from typing import Any

from twinprov.airflow.negotiation import NotAcceptableError
from twinprov.provenance.errors import QueryError, StoreError
from twinprov.provenance.sparql_check import (
    CheckedQuery,
    MalformedQueryError,
    QueryRefusedError,
)
from twinprov.provenance.sparql_results import (
    AnswerTooLargeError,
    Rendered,
    TimeLimitError,
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
                [sys.executable, "-m", "twinprov.airflow.graph_worker_child"],
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
