"""The endpoint's settings, from section ``[twinprov]`` (``AIRFLOW__TWINPROV__<KEY>`` environment
variables first, then ``airflow.cfg``), read by :func:`twinprov.provenance.config.setting` like
every other
twinprov setting, and passed to the core as values.

* ``query_time_limit_seconds`` (10): a query is cut, or stopped, after this long.
* ``query_row_cap`` (10000): at most this many solutions or triples per answer.
* ``query_max_chars`` (65536): longer query texts are refused.
* ``sparql_url`` (none): forward queries to this SPARQL 1.1 server, not the embedded store.
* ``store_wait_seconds`` (5): how long a query waits for an embedded store that another process
  holds, before the answer is 503 "store busy, retry".
* ``store_idle_seconds`` (2): the API server closes the embedded store after this long without
  queries, so that command-line tools and publish tasks can open it.
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
        )
