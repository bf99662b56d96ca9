"""The endpoint's settings, from section ``[twinprov]`` (``AIRFLOW__TWINPROV__<KEY>`` environment
variables first, then ``airflow.cfg``), read by :func:`twinprov.provenance.config.setting` and
:func:`~twinprov.provenance.config.number_setting` like every other twinprov setting, and passed
to the core as values.

* ``query_time_limit_seconds`` (10): a query is cut, or stopped, after this long.
* ``query_row_cap`` (10000): at most this many solutions or triples per answer.
* ``query_max_chars`` (65536): longer query texts are refused.
* ``sparql_url`` (none): forward queries to this SPARQL 1.1 server, not the embedded store.
* ``store_wait_seconds`` (5): how long a query waits for an embedded store that another process
  holds, before the answer is 503 "store busy, retry".
* ``store_idle_seconds`` (2): the API server closes the embedded store after this long without
  queries, so that command-line tools and publish tasks can open it.
* ``query_workers`` (6): queries answered at the same time (threads of the store owner process);
  more wait in a queue, first come first served. Above twice the per-user limit, so that two
  users at their limit leave room for everyone else.
* ``query_user_limit`` (2): queries one user may have running or waiting; one more is refused
  with 429 and ``Retry-After``.
* ``query_queue_max`` (16): queries that may wait for a worker; one more, or one that waited
  longer than the time limit, is refused with 503 and ``Retry-After``.
* ``query_memory_mb`` (4096; 0: no limit): address-space limit of the query process
  (``RLIMIT_AS``): a query that needs more ends with 413, the process is restarted.
* ``query_answer_max_mb`` (16): answers are cut at this size (``X-Twinprov-Cut: answer-size``);
  a single row larger than this is refused with 413.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EndpointSettings:
    """Limits and the graph store of the SPARQL endpoint."""

    time_limit_s: float = 10.0
    row_cap: int = 10000
    max_query_chars: int = 65536
    sparql_url: str | None = None
    store_wait_s: float = 5.0
    store_idle_s: float = 2.0
    workers: int = 6
    user_limit: int = 2
    queue_max: int = 16
    memory_mb: int = 4096
    answer_max_bytes: int = 16 * 2**20

    @classmethod
    def from_airflow(cls) -> EndpointSettings:
        """Read ``[twinprov]`` (environment > ``airflow.cfg`` > defaults)."""
        from twinprov.provenance.config import number_setting as num
        from twinprov.provenance.config import setting

        d = cls()
        return cls(
            time_limit_s=num("query_time_limit_seconds", d.time_limit_s),
            row_cap=int(num("query_row_cap", d.row_cap, int)),
            max_query_chars=int(num("query_max_chars", d.max_query_chars, int)),
            sparql_url=setting("sparql_url"),
            store_wait_s=num("store_wait_seconds", d.store_wait_s, zero=True),
            store_idle_s=num("store_idle_seconds", d.store_idle_s, zero=True),
            workers=int(num("query_workers", d.workers, int)),
            user_limit=int(num("query_user_limit", d.user_limit, int)),
            queue_max=int(num("query_queue_max", d.queue_max, int, zero=True)),
            memory_mb=int(num("query_memory_mb", d.memory_mb, int, zero=True)),
            answer_max_bytes=int(
                num("query_answer_max_mb", d.answer_max_bytes / 2**20, float) * 2**20
            ),
        )
