"""The twinprov FastAPI app, mounted by the plugin at ``/twinprov`` in ``airflow api-server``.

``/twinprov/sparql`` speaks the SPARQL 1.1 Protocol for queries:

* ``GET ?query=…``, ``POST`` form-encoded (``query=…``), ``POST application/sparql-query``;
  ``default-graph-uri`` / ``named-graph-uri`` (repeatable) set the dataset;
* content negotiation on ``Accept`` (or ``format=json|xml|csv|tsv|turtle|ntriples|jsonld``):
  SELECT/ASK as SPARQL Results JSON, XML, CSV, TSV; CONSTRUCT/DESCRIBE as Turtle, N-Triples,
  JSON-LD (or RDF/XML);
* the default graph is the union of the run graphs the user may read; each run is a named graph.

Every route needs an authenticated Airflow user (bearer JWT from ``/auth/token`` or the UI's
session cookie). Read-only; limits from ``[twinprov]``; an answer cut at the row cap or the time
limit says so in ``X-Twinprov-Cut`` (``row-cap`` / ``time-limit``). The HTML pages are in
:mod:`twinprov.airflow.pages`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from twinprov.airflow.access import ApiUser, LoginRequired, login_url, readable_dags
from twinprov.airflow.forward import UpstreamError
from twinprov.airflow.negotiation import NotAcceptableError
from twinprov.airflow.service import service
from twinprov.provenance.errors import QueryError, StoreError
from twinprov.provenance.sparql_check import QueryRefusedError
from twinprov.provenance.sparql_results import Rendered, TimeLimitError

QUERY_MEDIA_TYPE = "application/sparql-query"
UPDATE_MEDIA_TYPE = "application/sparql-update"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"

_READ_ONLY = (
    "this SPARQL endpoint is read-only: SPARQL Update is refused; send a query "
    "(SELECT, ASK, CONSTRUCT or DESCRIBE) as 'query'"
)


def cut_headers(rendered: Rendered) -> dict[str, str]:
    """Response headers saying how big the answer is and whether, and why, it was cut."""
    lim = service().limits
    headers = {
        "X-Twinprov-Row-Cap": str(lim.row_cap),
        "X-Twinprov-Time-Limit": f"{lim.time_limit_s:g}",
    }
    if rendered.rows is not None:
        headers["X-Twinprov-Rows"] = str(rendered.rows)
    if rendered.cut == "row-cap":
        headers["X-Twinprov-Cut"] = "row-cap"
        headers["X-Twinprov-Cut-Reason"] = (
            f"more than {lim.row_cap} rows: the answer holds the first {lim.row_cap}"
        )
    elif rendered.cut == "time-limit":
        headers["X-Twinprov-Cut"] = "time-limit"
        headers["X-Twinprov-Cut-Reason"] = (
            f"the time limit of {lim.time_limit_s:g} s was reached: "
            f"the answer holds the {rendered.rows} rows found by then"
        )
    return headers


_PERMISSIONS_TTL_S = 2.0
_permissions: dict[str, tuple[float, frozenset[str]]] = {}
_permissions_lock = threading.Lock()


def _permitted(user: Any) -> frozenset[str]:
    """The DAGs with recorded runs that ``user`` may read, asked of the auth manager (remembered
    for a few seconds per user: a changed permission or a new DAG shows within that time)."""
    from airflow.api_fastapi.app import get_auth_manager

    try:
        key = json.dumps(get_auth_manager().serialize_user(user), sort_keys=True, default=str)
    except Exception:  # an auth manager that cannot serialize its user: ask every time
        key = None
    now = time.monotonic()
    if key is not None:
        with _permissions_lock:
            hit = _permissions.get(key)
        if hit is not None and now - hit[0] < _PERMISSIONS_TTL_S:
            return hit[1]
    allowed = readable_dags(user, service().ledger_dags())
    if key is not None:
        with _permissions_lock:
            if len(_permissions) > 1000:
                _permissions.clear()
            _permissions[key] = (now, allowed)
    return allowed


def answer_or_raise(
    user: Any,
    text: str,
    *,
    default_graph_uri: tuple[str, ...] = (),
    named_graph_uri: tuple[str, ...] = (),
    accept: str | None = None,
    fmt: str | None = None,
) -> Rendered:
    """Answer ``text`` for ``user``; every refusal and failure as an HTTP error with a reason."""
    svc = service()
    try:
        started = time.perf_counter()
        permitted = _permitted(user)
        checked = time.perf_counter()
        rendered = svc.answer(
            text,
            permitted,
            default_graph_uri=default_graph_uri,
            named_graph_uri=named_graph_uri,
            accept=accept,
            fmt=fmt,
        )
        done = time.perf_counter()
        timing = (
            f"permissions;dur={(checked - started) * 1000:.2f}, "
            f"query;dur={(done - checked) * 1000:.2f}"
        )
        return replace(rendered, extra={**rendered.extra, "Server-Timing": timing})
    except QueryRefusedError as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(e)) from e
    except NotAcceptableError as e:
        raise HTTPException(status.HTTP_406_NOT_ACCEPTABLE, str(e)) from e
    except TimeLimitError as e:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            str(e),
            headers={
                "X-Twinprov-Cut": "time-limit",
                "X-Twinprov-Time-Limit": f"{svc.limits.time_limit_s:g}",
            },
        ) from e
    except StoreError as e:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(e), headers={"Retry-After": "2"}
        ) from e
    except UpstreamError as e:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(e)) from e
    except QueryError as e:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, str(e)) from e


async def _protocol_request(request: Request) -> tuple[str, list[str], list[str], str | None]:
    """The query, dataset and format of a SPARQL 1.1 Protocol query request."""
    params = request.query_params
    queries = params.getlist("query")
    default = params.getlist("default-graph-uri")
    named = params.getlist("named-graph-uri")
    fmt = params.get("format")
    if "update" in params:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, _READ_ONLY)
    if request.method == "POST":
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == FORM_MEDIA_TYPE:
            form = await request.form()
            if "update" in form:
                raise HTTPException(status.HTTP_400_BAD_REQUEST, _READ_ONLY)
            queries += [str(v) for v in form.getlist("query")]
            default += [str(v) for v in form.getlist("default-graph-uri")]
            named += [str(v) for v in form.getlist("named-graph-uri")]
            fmt = fmt or (str(form["format"]) if "format" in form else None)
        elif media == QUERY_MEDIA_TYPE:
            try:
                queries.append((await request.body()).decode("utf-8"))
            except UnicodeDecodeError as e:
                raise HTTPException(
                    status.HTTP_400_BAD_REQUEST, f"the query is not UTF-8 text: {e}"
                ) from e
        elif media == UPDATE_MEDIA_TYPE:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, _READ_ONLY)
        else:
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                f"send the query as {FORM_MEDIA_TYPE} ('query=…') or as {QUERY_MEDIA_TYPE}, "
                f"not {media or 'a body without Content-Type'}",
            )
    if len(queries) != 1:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            "send exactly one SPARQL query in the 'query' parameter"
            if not queries
            else f"send exactly one 'query' parameter, not {len(queries)}",
        )
    return queries[0], default, named, fmt


def create_app() -> FastAPI:
    """The app the plugin mounts (routes need no store or settings until called)."""
    from twinprov.airflow.pages import router as pages_router
    from twinprov.airflow.pages import static_files

    app = FastAPI(
        title="twinprov provenance",
        description="SPARQL 1.1 endpoint and provenance pages of twinprov (read-only).",
    )

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(login_url(exc.next_url), status_code=status.HTTP_303_SEE_OTHER)

    @app.api_route(
        "/sparql",
        methods=["GET", "POST"],
        summary="SPARQL 1.1 Protocol query endpoint",
        response_class=Response,
        responses={
            200: {"description": "the answer, in the negotiated format"},
            400: {"description": "malformed query, an update, or SERVICE"},
            401: {"description": "no valid token"},
            406: {"description": "no acceptable format for this query form"},
            503: {"description": "time limit reached, or the store is busy (retry)"},
        },
    )
    async def sparql(request: Request, user: ApiUser) -> Response:
        text, default, named, fmt = await _protocol_request(request)
        rendered = await run_in_threadpool(
            answer_or_raise,
            user,
            text,
            default_graph_uri=tuple(default),
            named_graph_uri=tuple(named),
            accept=request.headers.get("accept"),
            fmt=fmt,
        )
        headers = {
            "Vary": "Accept",
            "Cache-Control": "no-store",
            **cut_headers(rendered),
            **rendered.extra,
        }
        return Response(rendered.body, media_type=rendered.media_type, headers=headers)

    app.include_router(pages_router)
    app.mount("/static", static_files(), name="static")
    return app
