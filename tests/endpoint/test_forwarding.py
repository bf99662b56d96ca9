"""Forwarding to a SPARQL server (``[twinprov] sparql_url``): a real ``oxigraph serve`` (PyPI
``oxigraph``) on 127.0.0.1, a second ``airflow api-server`` configured to forward to it, the
same checks (authentication, read-only, no SERVICE, DAG permissions, limits) in front."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import rdflib

from tests.endpoint.conftest import ROW_CAP, TIME_LIMIT_S, Stack, free_port, start_api_server
from tests.endpoint.test_sparql_endpoint import (
    PATHOLOGICAL_Q,
    PREFIXES,
    RUNS_Q,
    STEPS_Q,
    bindings,
    rows_of,
    sparql,
)


def _oxigraph() -> str | None:
    local = Path(sys.executable).with_name("oxigraph")
    return str(local) if local.is_file() else shutil.which("oxigraph")


@pytest.fixture(scope="module")
def forwarding(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = _oxigraph()
    if binary is None:
        pytest.skip("no `oxigraph` server binary (pip install oxigraph)")
    root = tmp_path_factory.mktemp("oxigraph")
    port = free_port()
    log = (root / "oxigraph.log").open("wb")
    server = subprocess.Popen(
        [
            binary,
            "serve",
            "--location",
            str(root / "data"),
            "--bind",
            f"127.0.0.1:{port}",
            "--union-default-graph",
            "--timeout-s",
            str(TIME_LIMIT_S + 5),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    api = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/query", params={"query": "ASK {}"}, timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        # feed the server the published run graphs (Graph Store Protocol)
        for r in stack.runs.values():
            ttl = Path(r["record"].publication["files"]["prov.ttl"]).read_bytes()
            resp = httpx.put(
                f"{base}/store",
                params={"graph": r["graph"]},
                content=ttl,
                headers={"Content-Type": "text/turtle"},
                timeout=30,
            )
            assert resp.status_code in (201, 204), resp.text
        env = dict(stack.env, AIRFLOW__TWINPROV__SPARQL_URL=f"{base}/query")
        api = start_api_server(env, root / "api-server.log")
        yield replace(stack, env=env, server=api)
    finally:
        if api is not None:
            api.stop()
        server.terminate()
        server.wait(timeout=20)
        log.close()


def test_forwarded_answers_match_the_embedded_ones(stack: Stack, forwarding: Stack) -> None:
    for user in ("admin", "alice"):
        for query in (RUNS_Q, STEPS_Q, "SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } }"):
            embedded = bindings(sparql(stack, query, user=user))
            forwarded = bindings(sparql(forwarding, query, user=user))
            key = sorted(map(sorted, (r.items() for r in embedded)))
            assert sorted(map(sorted, (r.items() for r in forwarded))) == key, (user, query)
    assert [r["dag"] for r in bindings(sparql(forwarding, RUNS_Q, user="alice"))] == ["prov_alpha"]


def test_forwarded_formats_and_dataset(forwarding: Stack) -> None:
    for accept, fmt in (
        ("text/csv", "csv"),
        ("text/tab-separated-values", "tsv"),
        ("application/sparql-results+xml", "xml"),
    ):
        resp = sparql(forwarding, RUNS_Q, accept=accept)
        assert [r["dag"] for r in rows_of(resp.content, fmt)] == ["prov_alpha", "prov_beta"]
    ttl = sparql(forwarding, "CONSTRUCT WHERE { ?s <urn:twinprov:vocab#dagId> ?o }")
    g = rdflib.Graph().parse(data=ttl.content, format="turtle")
    assert len(g) == 2
    ask = sparql(forwarding, PREFIXES + 'ASK { ?d rdfs:label "secret" }', user="alice")
    assert ask.json()["boolean"] is False
    alpha = forwarding.run_graph("prov_alpha")
    only = sparql(forwarding, RUNS_Q, params=[("default-graph-uri", alpha)])
    assert [r["dag"] for r in bindings(only)] == ["prov_alpha"]


def test_forwarding_keeps_the_checks_in_front(forwarding: Stack) -> None:
    assert sparql(forwarding, RUNS_Q, user=None).status_code == 401
    resp = sparql(forwarding, "INSERT DATA { <urn:a> <urn:b> <urn:c> }", method="POST")
    assert resp.status_code == 400 and "read-only" in resp.json()["detail"]
    resp = sparql(forwarding, "SELECT * WHERE { SERVICE <http://127.0.0.1:9/> { ?s ?p ?o } }")
    assert resp.status_code == 400 and "SERVICE" in resp.json()["detail"]
    resp = sparql(forwarding, "SELEC nothing")
    assert resp.status_code == 400 and "malformed" in resp.json()["detail"]
    resp = sparql(forwarding, "SELECT * WHERE { ?s ?p ?o }", accept="text/csv")
    assert resp.headers["x-twinprov-cut"] == "row-cap"
    assert len(rows_of(resp.content, "csv")) == ROW_CAP
    started = time.monotonic()
    resp = sparql(forwarding, PATHOLOGICAL_Q, timeout=60)
    assert resp.status_code == 503 and resp.headers["x-twinprov-cut"] == "time-limit"
    assert time.monotonic() - started < TIME_LIMIT_S + 10
