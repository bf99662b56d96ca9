"""Airflow connections for the publication stages that log in somewhere (yProv): resolved here,
at the Airflow layer, and handed to ``twinprov.app.publish.publish_run`` as a lookup, so the
application layer never imports Airflow."""

from __future__ import annotations

__all__ = ["yprov_connection"]

import logging

from twinprov.app.yprov import YProvConnection, connection_from_fields, env_connection

log = logging.getLogger(__name__)


def yprov_connection(conn_id: str) -> YProvConnection | None:
    """The yProvStore server and account of Airflow connection ``conn_id`` (any secrets backend
    Airflow is configured with: the metadata DB, ``AIRFLOW_CONN_*``, Vault…), its password
    registered with Airflow's secrets masker; ``None`` if no such connection exists."""
    try:
        from airflow.sdk import Connection
        from airflow.sdk.log import mask_secret

        conn = Connection.get(conn_id)
    except Exception as e:  # not defined, or no way to ask here (e.g. outside a task)
        log.debug("twinprov: Airflow connection %s not available: %s", conn_id, type(e).__name__)
        return env_connection(conn_id)
    if conn.password:
        mask_secret(conn.password)
    return connection_from_fields(
        conn_id,
        host=conn.host,
        port=conn.port,
        schema=conn.schema,
        login=conn.login,
        password=conn.password,
    )
