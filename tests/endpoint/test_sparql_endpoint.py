"""The SPARQL 1.1 Protocol endpoint in a real ``airflow api-server`` (see conftest.py)."""

from __future__ import annotations

import io
import json
import subprocess
import time
from datetime import datetime
from typing import Any

import httpx
import pytest
import rdflib
from rdflib.query import Result

from tests.endpoint.conftest import PY, ROW_CAP, TIME_LIMIT_S, Stack

PREFIXES = (
    "PREFIX prov: <http://www.w3.org/ns/prov#>\n"
    "PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>\n"
    "PREFIX tp: <urn:twinprov:vocab#>\n"
)
RUNS_Q = PREFIXES + "SELECT ?dag ?run WHERE { ?r tp:dagId ?dag ; tp:runId ?run } ORDER BY ?dag"
STEPS_Q = PREFIXES + (
    "SELECT ?dag ?step ?state WHERE { ?t a tp:TaskTry ; tp:taskId ?step ; tp:state ?state ; "
    "prov:wasInformedBy ?r . ?r tp:dagId ?dag } ORDER BY ?dag ?step"
)
CONSTRUCT_Q = (
    PREFIXES
    + "CONSTRUCT { ?r tp:dagId ?dag ; tp:runId ?run } WHERE { ?r tp:dagId ?dag ; tp:runId ?run }"
)
PATHOLOGICAL_Q = (
    "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l . ?m ?n2 ?o }"
)


def sparql(
    stack: Stack,
    query: str | None = None,
    *,
    user: str | None = "admin",
    method: str = "GET",
    accept: str | None = None,
    params: list[tuple[str, str]] | None = None,
    form: list[tuple[str, str]] | None = None,
    body: str | None = None,
    content_type: str | None = None,
    timeout: float = 30,
) -> httpx.Response:
    headers: dict[str, str] = {}
    if user:
        headers["Authorization"] = f"Bearer {stack.tokens[user]}"
    if accept:
        headers["Accept"] = accept
    if content_type:
        headers["Content-Type"] = content_type
    url = f"{stack.base}/twinprov/sparql"
    q = list(params or [])
    if method == "GET":
        if query is not None:
            q.insert(0, ("query", query))
        return httpx.get(url, params=q, headers=headers, timeout=timeout)
    if form is not None or (body is None and query is not None):
        data: dict[str, list[str]] = {}
        for key, value in ([("query", query)] if query is not None else []) + (form or []):
            data.setdefault(key, []).append(value)
        return httpx.post(url, params=q, data=data, headers=headers, timeout=timeout)
    return httpx.post(url, params=q, content=body or "", headers=headers, timeout=timeout)


def bindings(resp: httpx.Response) -> list[dict[str, str]]:
    assert resp.status_code == 200, resp.text
    return [{k: v["value"] for k, v in b.items()} for b in resp.json()["results"]["bindings"]]


def rows_of(body: bytes, fmt: str) -> list[dict[str, str]]:
    res = Result.parse(io.BytesIO(body), format=fmt)
    return [{str(k): str(v) for k, v in row.asdict().items()} for row in res]


# -- authentication ----------------------------------------------------------------------------


def test_no_token_is_401_and_a_bad_token_is_refused(stack: Stack) -> None:
    resp = sparql(stack, RUNS_Q, user=None)
    assert resp.status_code == 401
    assert resp.json()["detail"] == "Not authenticated"
    resp = httpx.get(
        f"{stack.base}/twinprov/sparql",
        params={"query": RUNS_Q},
        headers={"Authorization": "Bearer not-a-jwt"},
        timeout=10,
    )
    assert resp.status_code in (401, 403)
    # pages too: an API client gets 401; a browser is sent to Airflow's login page
    run = stack.runs["prov_alpha"]
    page = f"{stack.base}/twinprov/runs/prov_alpha/{run['run_id']}"
    resp = httpx.get(page, timeout=10)
    assert resp.status_code == 303 and "/auth/login" in resp.headers["location"]


def test_token_flow(stack: Stack) -> None:
    resp = httpx.post(
        f"{stack.base}/auth/token",
        data={"username": "alice", "password": "alice-pw"},
        timeout=10,
    )
    assert resp.status_code == 201
    fresh = resp.json()["access_token"]
    ok = httpx.get(
        f"{stack.base}/twinprov/sparql",
        params={"query": "ASK {}"},
        headers={"Authorization": f"Bearer {fresh}"},
        timeout=10,
    )
    assert ok.status_code == 200 and ok.json() == {"head": {}, "boolean": True}
    wrong = httpx.post(
        f"{stack.base}/auth/token", json={"username": "alice", "password": "nope"}, timeout=10
    )
    assert wrong.status_code == 401


# -- protocol forms and formats ----------------------------------------------------------------


def test_get_post_form_and_post_direct_give_the_same_answer(stack: Stack) -> None:
    got = bindings(sparql(stack, RUNS_Q))
    assert [r["dag"] for r in got] == ["prov_alpha", "prov_beta"]
    assert bindings(sparql(stack, RUNS_Q, method="POST")) == got
    direct = sparql(
        stack, method="POST", body=RUNS_Q, content_type="application/sparql-query; charset=utf-8"
    )
    assert bindings(direct) == got


@pytest.mark.parametrize(
    ("accept", "fmt", "media"),
    [
        ("application/sparql-results+json", "json", "application/sparql-results+json"),
        ("application/sparql-results+xml", "xml", "application/sparql-results+xml"),
        ("text/csv", "csv", "text/csv"),
        ("text/tab-separated-values", "tsv", "text/tab-separated-values"),
    ],
)
def test_select_in_every_results_format(stack: Stack, accept: str, fmt: str, media: str) -> None:
    resp = sparql(stack, STEPS_Q, accept=accept)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].split(";")[0] == media
    rows = rows_of(resp.content, fmt)
    assert [(r["dag"], r["step"], r["state"]) for r in rows] == [
        ("prov_alpha", "derive", "success"),
        ("prov_alpha", "make", "success"),
        ("prov_alpha", "validate_derive_table", "success"),  # warn policy: the run went on
        ("prov_beta", "only", "success"),
    ]
    assert resp.headers["x-twinprov-rows"] == "4" and "x-twinprov-cut" not in resp.headers


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [("application/sparql-results+json", "json"), ("application/sparql-results+xml", "xml")],
)
def test_ask(stack: Stack, accept: str, fmt: str) -> None:
    yes = sparql(stack, PREFIXES + 'ASK { ?r tp:dagId "prov_beta" }', accept=accept)
    no = sparql(stack, PREFIXES + 'ASK { ?r tp:dagId "no_such_dag" }', accept=accept)
    assert Result.parse(io.BytesIO(yes.content), format=fmt).askAnswer is True
    assert Result.parse(io.BytesIO(no.content), format=fmt).askAnswer is False


@pytest.mark.parametrize(
    ("accept", "rdf_format"),
    [
        ("text/turtle", "turtle"),
        ("application/n-triples", "nt"),
        ("application/ld+json", "json-ld"),
    ],
)
def test_construct_and_describe_in_every_graph_format(
    stack: Stack, accept: str, rdf_format: str
) -> None:
    resp = sparql(stack, CONSTRUCT_Q, accept=accept, method="POST")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].split(";")[0] == accept
    g = rdflib.Graph().parse(data=resp.content, format=rdf_format)
    dag_id = rdflib.URIRef("urn:twinprov:vocab#dagId")
    assert sorted(str(o) for o in g.objects(None, dag_id)) == ["prov_alpha", "prov_beta"]
    run = stack.run_graph("prov_alpha")
    described = sparql(stack, f"DESCRIBE <{run}>", accept=accept)
    g = rdflib.Graph().parse(data=described.content, format=rdf_format)
    assert (rdflib.URIRef(run), dag_id, rdflib.Literal("prov_alpha")) in g


def test_format_parameter_and_not_acceptable(stack: Stack) -> None:
    resp = sparql(stack, RUNS_Q, params=[("format", "csv")])
    assert resp.headers["content-type"].startswith("text/csv")
    resp = sparql(stack, CONSTRUCT_Q, accept="text/csv")
    assert resp.status_code == 406 and "text/turtle" in resp.json()["detail"]


def test_off_the_shelf_client_rdflib_sparqlstore(stack: Stack) -> None:
    from rdflib.plugins.stores.sparqlstore import SPARQLStore

    for method in ("GET", "POST", "POST_FORM"):
        store = SPARQLStore(
            f"{stack.base}/twinprov/sparql",
            method=method,
            returnFormat="json",
            headers={"Authorization": f"Bearer {stack.tokens['admin']}"},
        )
        rows = list(store.query(RUNS_Q))
        assert sorted(str(r.dag) for r in rows) == ["prov_alpha", "prov_beta"], method


# -- the dataset: union default graph, a named graph per run -----------------------------------


def test_union_default_graph_and_one_named_graph_per_run(stack: Stack) -> None:
    graphs = bindings(sparql(stack, "SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } }"))
    assert sorted(r["g"] for r in graphs) == sorted(stack.run_graph(d) for d in stack.runs)
    alpha = stack.run_graph("prov_alpha")
    only_alpha = sparql(stack, RUNS_Q, params=[("default-graph-uri", alpha)])
    assert [r["dag"] for r in bindings(only_alpha)] == ["prov_alpha"]
    named = sparql(
        stack,
        "SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } }",
        params=[("named-graph-uri", alpha)],
    )
    assert [r["g"] for r in bindings(named)] == [alpha]
    from_clause = sparql(stack, RUNS_Q.replace("WHERE", f"FROM <{alpha}> WHERE"))
    assert [r["dag"] for r in bindings(from_clause)] == ["prov_alpha"]
    # POST form carries the dataset in the body
    body = sparql(stack, RUNS_Q, method="POST", form=[("default-graph-uri", alpha)])
    assert [r["dag"] for r in bindings(body)] == ["prov_alpha"]


# -- read-only, SERVICE, malformed -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"query": "INSERT DATA { <urn:a> <urn:b> <urn:c> }"},
        {"query": "LOAD <http://127.0.0.1:9/data.ttl>", "method": "POST"},
        {"query": "CLEAR ALL", "method": "POST"},
        {"method": "POST", "body": "DROP ALL", "content_type": "application/sparql-update"},
        {"method": "POST", "form": [("update", "DELETE WHERE { ?s ?p ?o }")]},
        {"query": None, "params": [("update", "INSERT DATA { <urn:a> <urn:b> <urn:c> }")]},
    ],
)
def test_updates_and_writes_are_400_read_only(stack: Stack, kwargs: dict[str, Any]) -> None:
    resp = sparql(stack, **kwargs)
    assert resp.status_code == 400, resp.text
    assert "read-only" in resp.json()["detail"]


def test_nothing_was_written(stack: Stack) -> None:
    resp = sparql(stack, "ASK { <urn:a> <urn:b> <urn:c> }")
    assert resp.json()["boolean"] is False


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * WHERE { SERVICE <http://127.0.0.1:9/sparql> { ?s ?p ?o } }",
        "SELECT * WHERE { OPTIONAL { SERVICE SILENT <http://127.0.0.1:9/> { ?s ?p ?o } } }",
    ],
)
def test_service_is_400(stack: Stack, query: str) -> None:
    resp = sparql(stack, query)
    assert resp.status_code == 400
    assert "SERVICE" in resp.json()["detail"] and "outbound" in resp.json()["detail"]


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"query": "SELEC ?x WHERE { ?x ?y ?z }"}, 400, "malformed SPARQL query"),
        ({"query": "SELECT ?x WHERE { ?x ?y }"}, 400, "malformed SPARQL query"),
        ({"query": "SELECT ?x FROM WHERE { ?x ?y ?z }"}, 400, "malformed SPARQL query"),
        ({"query": ""}, 400, "empty"),
        ({"query": None}, 400, "'query' parameter"),
        ({"query": RUNS_Q, "params": [("query", RUNS_Q)]}, 400, "exactly one"),
        ({"method": "POST", "body": RUNS_Q, "content_type": "text/plain"}, 415, "sparql-query"),
        (
            {"query": RUNS_Q, "params": [("default-graph-uri", "not an IRI")]},
            400,
            "not an absolute IRI",
        ),
    ],
)
def test_bad_requests_are_4xx_with_a_reason(
    stack: Stack, kwargs: dict[str, Any], status: int, message: str
) -> None:
    resp = sparql(stack, **kwargs)
    assert resp.status_code == status, resp.text
    assert message in resp.json()["detail"]


# -- limits ------------------------------------------------------------------------------------


def test_row_cap_cuts_and_says_so(stack: Stack) -> None:
    resp = sparql(stack, "SELECT * WHERE { ?s ?p ?o }", accept="text/csv")
    assert resp.status_code == 200
    assert resp.headers["x-twinprov-cut"] == "row-cap"
    assert resp.headers["x-twinprov-row-cap"] == str(ROW_CAP)
    assert str(ROW_CAP) in resp.headers["x-twinprov-cut-reason"]
    assert len(rows_of(resp.content, "csv")) == ROW_CAP == int(resp.headers["x-twinprov-rows"])
    graph = sparql(stack, "CONSTRUCT WHERE { ?s ?p ?o }", accept="application/n-triples")
    assert graph.headers["x-twinprov-cut"] == "row-cap"
    assert len(rdflib.Graph().parse(data=graph.content, format="nt")) == ROW_CAP


def test_time_limit_stops_a_pathological_query(stack: Stack) -> None:
    started = time.monotonic()
    resp = sparql(stack, PATHOLOGICAL_Q, timeout=60)
    took = time.monotonic() - started
    assert resp.status_code == 503, resp.text
    assert resp.headers["x-twinprov-cut"] == "time-limit"
    assert f"time limit of {TIME_LIMIT_S} s" in resp.json()["detail"]
    assert TIME_LIMIT_S <= took < TIME_LIMIT_S + 10
    # the store owner was stopped and comes back for the next query
    assert [r["dag"] for r in bindings(sparql(stack, RUNS_Q))] == ["prov_alpha", "prov_beta"]


# -- who sees what -----------------------------------------------------------------------------


def test_a_user_sees_only_runs_of_dags_they_may_read(stack: Stack) -> None:
    beta = stack.run_graph("prov_beta")
    alpha = stack.run_graph("prov_alpha")
    assert [r["dag"] for r in bindings(sparql(stack, RUNS_Q, user="alice"))] == ["prov_alpha"]
    graphs = bindings(
        sparql(stack, "SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } }", user="alice")
    )
    assert [r["g"] for r in graphs] == [alpha]
    # naming the other team's graph does not reach it, by protocol or by FROM / GRAPH
    for kwargs in (
        {"params": [("default-graph-uri", beta)]},
        {"params": [("named-graph-uri", beta)]},
    ):
        assert bindings(sparql(stack, RUNS_Q, user="alice", **kwargs)) == []
    assert (
        bindings(sparql(stack, RUNS_Q.replace("WHERE", f"FROM <{beta}> WHERE"), user="alice")) == []
    )
    in_graph = f"SELECT ?s WHERE {{ GRAPH <{beta}> {{ ?s ?p ?o }} }}"
    assert bindings(sparql(stack, in_graph, user="alice")) == []
    secret = PREFIXES + 'ASK { ?d rdfs:label "secret" }'
    assert sparql(stack, secret, user="alice").json()["boolean"] is False
    assert sparql(stack, secret, user="admin").json()["boolean"] is True
    count = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"
    n_alice = int(bindings(sparql(stack, count, user="alice"))[0]["n"])
    n_admin = int(bindings(sparql(stack, count, user="admin"))[0]["n"])
    assert 0 < n_alice < n_admin


# -- the store: one owner, catch-up, the CLI alongside -----------------------------------------


def _hold_store(stack: Stack, timeout: float = 15) -> Any:
    """Open the embedded store in this process (waiting until the API server lets it go)."""
    from twinprov.provenance.errors import StoreError
    from twinprov.provenance.store import EmbeddedStore

    deadline = time.monotonic() + timeout
    while True:
        ctx = EmbeddedStore(stack.store_path).open()
        try:
            return ctx, ctx.__enter__()
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_busy_store_is_503_then_catch_up_loads_what_was_published_meanwhile(
    stack: Stack,
) -> None:
    from twinprov.app.publish import publish_run
    from twinprov.provenance.config import Settings
    from twinprov.provenance.ledger import Ledger

    run = stack.runs["prov_alpha"]
    ctx, _held = _hold_store(stack)
    try:
        resp = sparql(stack, RUNS_Q, timeout=30)
        assert resp.status_code == 503, resp.text
        assert "busy" in resp.json()["detail"] and resp.headers["retry-after"]
        # a publication while the store is held: files and ledger now, the store later
        settings = Settings(
            home=stack.twinprov_home,
            ledger_url=stack.ledger_url,
            store_path=stack.store_path,
            base_iri="urn:twinprov:",
        )
        pub = publish_run(settings, "prov_alpha", run["run_id"])
        assert pub.store_error is not None
    finally:
        ctx.__exit__(None, None, None)
    rec = Ledger(stack.ledger_url).run("prov_alpha", run["run_id"])
    assert rec is not None and rec.published_digest != rec.stored_digest
    ended = PREFIXES + f"SELECT ?end WHERE {{ <{run['graph']}> prov:endedAtTime ?end }}"
    got = bindings(sparql(stack, ended))
    assert rec.ended is not None and len(got) == 1  # the endpoint caught up before answering:
    assert datetime.fromisoformat(got[0]["end"]) == datetime.fromisoformat(rec.ended)
    rec = Ledger(stack.ledger_url).run("prov_alpha", run["run_id"])
    assert rec is not None and rec.published_digest == rec.stored_digest


def test_cli_query_works_beside_the_api_server(stack: Stack) -> None:
    deadline = time.monotonic() + 20
    while True:  # the API server closes the store after a short idle time
        proc = subprocess.run(
            [PY, "-m", "twinprov.cli", "query", RUNS_Q, "--format", "json"],
            env=stack.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        assert "busy" in proc.stderr, proc.stderr
        time.sleep(0.5)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["results"]["bindings"]
    assert sorted(r["dag"]["value"] for r in rows) == ["prov_alpha", "prov_beta"]


# -- registration in Airflow -------------------------------------------------------------------


def test_plugin_registers_the_app_and_the_dag_run_view(stack: Stack) -> None:
    resp = httpx.get(f"{stack.base}/api/v2/plugins", headers=stack.headers(), timeout=10)
    assert resp.status_code == 200, resp.text
    plugin = next(p for p in resp.json()["plugins"] if p["name"] == "twinprov")
    assert any(a["url_prefix"] == "/twinprov" for a in plugin["fastapi_apps"])
    views = {v["destination"]: v for v in plugin["external_views"]}
    assert views["dag_run"]["name"] == "Provenance"
    assert views["dag_run"]["href"] == "twinprov/runs/{DAG_ID}/{RUN_ID}"
    assert views["dag_run"]["url_route"]
    assert views["nav"]["href"] == "twinprov/"
