"""Fair admission of SPARQL queries in the API server: at most ``workers`` queries run at once,
at most ``per_user`` per user (running or waiting), the others wait first come, first served in a
queue of at most ``queue_max``. No Airflow, no web framework.

A user at their limit is refused at once (:class:`UserLimitError`, HTTP 429); a query that finds
the queue full, or waits longer than ``wait_s`` for a worker, is refused (:class:`QueueFullError`,
HTTP 503). Both say when to retry. Since a heavy user can never hold more than ``per_user`` places,
the next free worker goes to whoever waited longest: a well-behaved user is served between two
heavy queries, never starved. Queries are admitted in the thread that answers them (the endpoint
and the query page both answer in the API server's thread pool): at most ``workers + queue_max``
threads are ever held by queries, the rest of the pool serves Airflow's own routes.
"""

from __future__ import annotations

__all__ = ["Admission", "AdmissionError", "QueueFullError", "UserLimitError"]

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterator

from twinprov.provenance.errors import QueryError


class AdmissionError(QueryError):
    """The query was not admitted; retry after :attr:`retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> str:
        """The ``Retry-After`` header value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(self.retry_after_s)))


class UserLimitError(AdmissionError):
    """The user has as many queries running or waiting as they may (HTTP 429)."""


class QueueFullError(AdmissionError):
    """Too many queries wait for a worker, or this one waited too long (HTTP 503)."""


class Admission:
    """Slots for queries; one per API-server process, thread-safe."""

    def __init__(self, workers: int, per_user: int, queue_max: int, wait_s: float) -> None:
        self.workers = max(workers, 1)
        self.per_user = max(per_user, 1)
        self.queue_max = queue_max
        self.wait_s = wait_s
        self.running = 0
        self.held: dict[Hashable, int] = {}
        self.waiting: deque[object] = deque()
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def slot(self, user: Hashable) -> Iterator[None]:
        """Hold a worker for one query of ``user`` (waiting for one if need be).

        Raises:
            UserLimitError: ``user`` already has ``per_user`` queries running or waiting.
            QueueFullError: the queue is full, or no worker became free within ``wait_s``.
        """
        with self._cond:
            if self.held.get(user, 0) >= self.per_user:
                raise UserLimitError(
                    f"you have {self.per_user} queries running or waiting; this endpoint takes "
                    f"at most {self.per_user} at a time from one user: wait for an answer, then "
                    "retry",
                    1.0,
                )
            busy = self.running >= self.workers or bool(self.waiting)
            if busy and len(self.waiting) >= self.queue_max:
                raise QueueFullError(
                    f"the SPARQL endpoint is busy ({self.running} queries running, "
                    f"{len(self.waiting)} waiting); retry",
                    self.wait_s / 2,
                )
            self.held[user] = self.held.get(user, 0) + 1
            try:
                self._acquire()
            except BaseException:
                self._drop(user)
                raise
        try:
            yield
        finally:
            with self._cond:
                self.running -= 1
                self._drop(user)
                self._cond.notify_all()

    def _drop(self, user: Hashable) -> None:
        self.held[user] -= 1
        if not self.held[user]:
            del self.held[user]

    def _acquire(self) -> None:
        """Wait (holding the condition) until this query's turn and a free worker."""
        ticket = object()
        self.waiting.append(ticket)
        give_up = time.monotonic() + self.wait_s
        try:
            while self.waiting[0] is not ticket or self.running >= self.workers:
                left = give_up - time.monotonic()
                if left <= 0:
                    raise QueueFullError(
                        f"the SPARQL endpoint is busy: no query worker became free within "
                        f"{self.wait_s:g} s; retry",
                        self.wait_s / 2,
                    )
                self._cond.wait(left)
        finally:
            self.waiting.remove(ticket)
            self._cond.notify_all()  # the next in line may go now (or after us)
        self.running += 1
