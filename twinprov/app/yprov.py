"""yProv publication: a run's PROV-JSON document pushed to a yProvStore server.

yProvStore (https://github.com/HPCI-Lab/yProvStore) is interTwin's provenance store. Its routes,
as its sources declare them (``src/routers/authentication/_login.py``,
``src/routers/documents/_create.py``, mounted by ``src/routers/root.py``):

* ``POST /auth/login`` with JSON ``{"email", "password"}`` → ``{"access_token", "token_type":
  "bearer"}``;
* ``POST /documents`` with JSON ``{"document_data": <the document>}``, the token as
  ``Authorization: Bearer …``, and the query parameter ``parent_document_pid`` for a new version
  of a document → ``{"pid", "version", "storage_url", "owner_email", "parent_document_pid"}``.

The server and its account come from an Airflow connection (``[twinprov] yprov_conn_id``,
default ``twinprov_yprov``): host (a URL, or a host name with ``schema`` http/https as Airflow's
HTTP connections have it), port, login (the account's e-mail), password. The Airflow layer
resolves it (``twinprov.airflow.connections``); without it, Airflow's ``AIRFLOW_CONN_<ID>``
environment convention is read (:func:`env_connection`). The password and the token are used in
requests only: they are never recorded.
"""

from __future__ import annotations

__all__ = [
    "ConnectionLookup",
    "YProvConnection",
    "YProvError",
    "connection_from_fields",
    "env_connection",
    "push_document",
    "yprov_stage",
]

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import httpx

from twinprov.provenance.errors import PublishError
from twinprov.provenance.ids import Ids
from twinprov.provenance.ledger import Ledger

if TYPE_CHECKING:
    from twinprov.app.publish import PublishContext

GAP = "yprov"
"""Name of the publication stage (and of its gap)."""


class YProvError(PublishError):
    """The run could not be pushed to yProv (no connection, unreachable, refused)."""


@dataclass(frozen=True)
class YProvConnection:
    """A yProvStore server and the account twinprov pushes with."""

    conn_id: str
    url: str
    """Base URL, e.g. ``https://yprov.example.org:8000``."""
    login: str
    password: str = field(repr=False)


ConnectionLookup = Callable[[str], "YProvConnection | None"]
"""Connection id → the connection, ``None`` if it is not defined."""


def connection_from_fields(
    conn_id: str,
    *,
    host: str | None,
    port: int | None,
    schema: str | None,
    login: str | None,
    password: str | None,
) -> YProvConnection:
    """The fields of an Airflow connection as a :class:`YProvConnection` (Airflow's HTTP
    convention: ``host`` may be a whole URL; otherwise ``schema`` is the protocol)."""
    host = (host or "").strip().rstrip("/")
    if not host or not login or not password:
        fields = (("host", host), ("login", login), ("password", password))
        missing = [name for name, value in fields if not value]
        raise YProvError(
            f"Airflow connection '{conn_id}' for yProv has no {', '.join(missing)}: "
            "set host (and port), login (the account e-mail) and password"
        )
    if "://" not in host:
        host = f"{schema if schema in ('http', 'https') else 'http'}://{host}"
    url = f"{host}:{port}" if port and not urlsplit(host).port else host
    return YProvConnection(conn_id, url, login, password)


def env_connection(conn_id: str) -> YProvConnection | None:
    """The connection from ``AIRFLOW_CONN_<CONN_ID>`` (Airflow's URI or JSON form), if set."""
    raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}", "").strip()
    if not raw:
        return None
    if raw.startswith("{"):
        try:
            d: Mapping[str, Any] = json.loads(raw)
        except ValueError as e:
            raise YProvError(
                f"AIRFLOW_CONN_{conn_id.upper()} is not valid JSON (line {e.args[0][-12:]})"
            ) from None
        port = d.get("port")
        return connection_from_fields(
            conn_id,
            host=d.get("host"),
            port=int(port) if port else None,
            schema=d.get("schema"),
            login=d.get("login"),
            password=d.get("password"),
        )
    parts = urlsplit(raw)
    try:
        port = parts.port
    except ValueError:
        raise YProvError(f"AIRFLOW_CONN_{conn_id.upper()}: the port is not a number") from None
    return connection_from_fields(
        conn_id,
        host=parts.hostname,
        port=port,
        schema=unquote(parts.path.lstrip("/")) or parts.scheme or None,
        login=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    detail = body.get("detail") if isinstance(body, dict) else None
    return f": {' '.join(str(detail).split())[:200]}" if detail else ""


def _post(client: httpx.Client, conn: YProvConnection, route: str, **kwargs: Any) -> dict[str, Any]:
    retry = "; `twinprov publish --pending` tries again"
    try:
        response = client.post(route, **kwargs)
    except httpx.TransportError as e:
        raise YProvError(
            f"yProv at {conn.url} unreachable ({type(e).__name__}) for POST {route}: check the "
            f"host and port of Airflow connection '{conn.conn_id}'{retry}"
        ) from None  # the cause may carry the request, and the request the password
    if response.status_code == 401:
        what = "login" if route == "/auth/login" else "token"
        raise YProvError(
            f"yProv at {conn.url} refused the {what} of {conn.login} (401) on POST {route}: check "
            f"the login and password of Airflow connection '{conn.conn_id}'{retry}"
        )
    if response.status_code >= 500:
        raise YProvError(
            f"yProv at {conn.url} failed on POST {route} ({response.status_code})"
            f"{_detail(response)}{retry}"
        )
    if response.status_code >= 400:
        raise YProvError(
            f"yProv at {conn.url} refused POST {route} ({response.status_code}){_detail(response)}"
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise YProvError(f"yProv at {conn.url} answered POST {route} with no JSON object")
    return body


def push_document(
    conn: YProvConnection,
    document: Mapping[str, Any],
    *,
    parent_pid: str | None = None,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Log in and upload ``document`` (PROV-JSON as a dict); returns yProvStore's record of it
    (``pid``, ``version``, ``storage_url``, ``parent_document_pid``)."""
    with httpx.Client(base_url=conn.url, timeout=timeout_s) as client:
        login = _post(
            client, conn, "/auth/login", json={"email": conn.login, "password": conn.password}
        )
        token = login.get("access_token")
        if not isinstance(token, str) or not token:
            raise YProvError(f"yProv at {conn.url} answered the login with no access_token")
        record = _post(
            client,
            conn,
            "/documents",
            json={"document_data": dict(document)},
            params={"parent_document_pid": parent_pid} if parent_pid else None,
            headers={"Authorization": f"Bearer {token}"},
        )
    if not isinstance(record.get("pid"), str) or not record["pid"]:
        raise YProvError(f"yProv at {conn.url} answered POST /documents with no pid")
    return record


def _parent_pid(ctx: PublishContext) -> str | None:
    """For a rerun: the yProv pid of the original run (its document is the parent version)."""
    verdict = ctx.publication.get("verdict") or {}
    original = verdict.get("original_run")
    if not original:
        return None  # not a rerun, or a rerun whose original could not be named
    ids = Ids(ctx.settings.base_iri)
    for rec in Ledger(ctx.settings.ledger_url).runs():
        if ids.run(rec.dag_id, rec.run_id) == original:
            pid = (rec.publication.get(GAP) or {}).get("pid")
            if not pid:
                raise YProvError(
                    f"the original run {rec.dag_id}/{rec.run_id} is not in yProv yet, so this "
                    f"rerun cannot be sent as its new version: `twinprov publish {rec.run_id} "
                    "--to yprov`, then `twinprov publish --pending`"
                )
            return str(pid)
    return None


def yprov_stage(
    ctx: PublishContext, document_json: Callable[[], str], lookup: ConnectionLookup | None
) -> None:
    """The ``yprov`` publication stage: push the run's document once (when the setting
    ``yprov_publish`` is on, or a previous push of the run failed), and keep its record in
    ``ctx.publication["yprov"]`` (``pid``, ``location``, ``parent_pid``, ``version``)."""
    previous = ctx.rec.publication.get(GAP)
    if isinstance(previous, dict) and previous.get("pid"):
        ctx.publication[GAP] = previous  # pushed already: yProv keeps that version
        return
    if not (ctx.settings.yprov_publish or GAP in (ctx.rec.publication.get("gaps") or {})):
        return
    conn_id = ctx.settings.yprov_conn_id
    conn = (lookup or env_connection)(conn_id)
    if conn is None:
        raise YProvError(
            f"no Airflow connection '{conn_id}' for yProv: add one (host, port, login, "
            f"password), e.g. AIRFLOW_CONN_{conn_id.upper()}='https://USER%40SITE:PASSWORD@HOST:PORT'"
        )
    parent = _parent_pid(ctx)
    record = push_document(
        conn,
        json.loads(document_json()),
        parent_pid=parent,
        timeout_s=ctx.settings.yprov_timeout_s,
    )
    pid = str(record["pid"])
    ctx.publication[GAP] = {
        "pid": pid,
        "location": f"{conn.url}/documents/{pid}",
        "parent_pid": record.get("parent_document_pid") or parent,
        "version": record.get("version"),
    }
