"""The twinprov FastAPI app, mounted by the plugin at ``/twinprov`` in ``airflow api-server``.

``/twinprov/sparql`` speaks the SPARQL 1.1 Protocol for queries:

* ``GET ?query=…``, ``POST`` form-encoded (``query=…``), ``POST application/sparql-query``;
  ``default-graph-uri`` / ``named-graph-uri`` (repeatable) set the dataset;
* content negotiation on ``Accept`` (or ``format=json|xml|csv|tsv|turtle|ntriples|jsonld``):
  SELECT/ASK as SPARQL Results JSON, XML, CSV, TSV; CONSTRUCT/DESCRIBE as Turtle, N-Triples,
  JSON-LD (or RDF/XML);
* the default graph is the union of the run graphs the user may read; each run is a named graph.

Every route needs an authenticated Airflow user (bearer JWT from ``/auth/token`` or the UI's
session cookie). Read-only; limits from ``[twinprov]``; an answer cut at the row cap, the answer
size limit or the time limit says so in ``X-Twinprov-Cut`` (``row-cap`` / ``answer-size`` /
``time-limit``). Queries are admitted fairly (:mod:`twinprov.airflow.admission`: 429 for a user at
their limit, 503 when the queue is full, both with ``Retry-After``); a request body is read no
further than the query size limit allows (413). Nothing here parses a query: the checks run in
the query process, within the time limit. The HTML pages are in :mod:`twinprov.airflow.pages`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from twinprov.airflow.access import ApiUser, LoginRequired, login_url, readable_dags
from twinprov.airflow.admission import Admission, AdmissionError, UserLimitError
from twinprov.airflow.forward import UpstreamError
from twinprov.airflow.negotiation import NotAcceptableError
from twinprov.airflow.service import service
from twinprov.provenance.errors import QueryError, StoreError
from twinprov.provenance.sparql_check import QueryRefusedError
from twinprov.provenance.sparql_results import AnswerTooLargeError, Rendered, TimeLimitError

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
    elif rendered.cut == "answer-size":
        headers["X-Twinprov-Cut"] = "answer-size"
        headers["X-Twinprov-Cut-Reason"] = (
            f"the answer size limit of {lim.answer_max_bytes / 2**20:g} MiB was reached: "
            f"the answer holds the first {rendered.rows} rows"
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
    """Answer ``text`` for ``user`` once admitted (:func:`admission`); every refusal and failure
    as an HTTP error with a reason."""
    svc = service()
    try:
        started = time.perf_counter()
        permitted = _permitted(user)
        checked = time.perf_counter()
        with admission().slot(_user_key(user)):
            admitted = time.perf_counter()
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
            f"queue;dur={(admitted - checked) * 1000:.2f}, "
            f"query;dur={(done - admitted) * 1000:.2f}"
        )
        return replace(rendered, extra={**rendered.extra, "Server-Timing": timing})
    except UserLimitError as e:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, str(e), headers={"Retry-After": e.retry_after}
        ) from e
    except AdmissionError as e:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(e), headers={"Retry-After": e.retry_after}
        ) from e
    except QueryRefusedError as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(e)) from e
    except NotAcceptableError as e:
        raise HTTPException(status.HTTP_406_NOT_ACCEPTABLE, str(e)) from e
    except AnswerTooLargeError as e:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(e)) from e
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


_admission: Admission | None = None
_admission_lock = threading.Lock()


def admission() -> Admission:
    """This process's admission of queries (made on first use, from the settings)."""
    global _admission
    with _admission_lock:
        if _admission is not None:
            return _admission
        lim = service().limits
        _admission = Admission(
            lim.workers,
            lim.user_limit,
            lim.queue_max,
            wait_s=lim.time_limit_s + lim.store_wait_s + 2.0,
        )
    return _admission


def _user_key(user: Any) -> str:
    """Who is asking, for the per-user limit."""
    for attr in ("get_id", "get_name"):
        get = getattr(user, attr, None)
        if callable(get):
            with_id = get()
            if with_id:
                return f"{type(user).__name__}:{with_id}"
    return repr(user)


def _too_long(got: str, max_chars: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"the query has {got} characters; this endpoint takes at most {max_chars}",
    )


async def _bounded_body(request: Request, max_bytes: int, max_chars: int) -> bytes:
    """The request body, refused (413) by its ``Content-Length`` or, for a chunked body, as soon
    as more than ``max_bytes`` came: never read whole into memory."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "bad Content-Length") from None
        if declared > max_bytes:
            raise _too_long(f"{declared} bytes, so more than {max_chars}", max_chars)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_long(f"more than {max_chars}", max_chars)
    return bytes(body)


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
        max_chars = service().limits.max_query_chars
        if media == FORM_MEDIA_TYPE:
            # percent-encoded UTF-8: up to 12 bytes a character, and the other parameters
            raw = await _bounded_body(request, 12 * max_chars + 65536, max_chars)
            try:
                pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, errors="strict")
            except UnicodeDecodeError as e:
                raise HTTPException(
                    status.HTTP_400_BAD_REQUEST, f"the form is not URL-encoded UTF-8: {e}"
                ) from e
            form = [(k, v) for k, v in pairs]
            if any(k == "update" for k, _ in form):
                raise HTTPException(status.HTTP_400_BAD_REQUEST, _READ_ONLY)
            queries += [v for k, v in form if k == "query"]
            default += [v for k, v in form if k == "default-graph-uri"]
            named += [v for k, v in form if k == "named-graph-uri"]
            fmt = fmt or next((v for k, v in form if k == "format"), None)
        elif media == QUERY_MEDIA_TYPE:
            raw = await _bounded_body(request, 4 * max_chars, max_chars)  # UTF-8: <= 4 a character
            try:
                queries.append(raw.decode("utf-8"))
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
    max_chars = service().limits.max_query_chars
    if len(queries[0]) > max_chars:
        raise _too_long(str(len(queries[0])), max_chars)
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
            413: {"description": "the query, a row of the answer, or its memory use is too large"},
            429: {"description": "this user has as many queries running as they may (retry)"},
            503: {"description": "time limit reached, or the store or the queue is busy (retry)"},
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
