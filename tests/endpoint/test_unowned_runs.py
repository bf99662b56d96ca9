"""Runs of a DAG Airflow no longer knows (``airflow dags delete``) are readable by admins only.

Deny by default: with no DAG row there is no team and no owner to ask the auth manager about, and
auth managers allow a team-less DAG id to every role that may read DAGs. Named so that it runs
after the other endpoint files: it adds a run (of ``prov_ghost``) to the shared deployment.
"""

from __future__ import annotations

import io
import subprocess
import textwrap
import time
import zipfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.endpoint.conftest import AIRFLOW, MAKE_RUNS, PY, Stack
from tests.endpoint.test_pages import page
from tests.endpoint.test_sparql_endpoint import PREFIXES, RUNS_Q, bindings, sparql

GHOST = """
name: prov_ghost
description: one step; its DAG is deleted from Airflow after the run
steps:
  - id: only
    command: [python, -c, "open('g.txt', 'w').write('ghost output bytes')"]
    outputs: [{name: ghost_out, path: g.txt, media_type: text/plain}]
"""


@pytest.fixture(scope="module")
def ghost(stack: Stack) -> Iterator[dict[str, Any]]:
    """A run of ``prov_ghost`` (in alice's team's bundle), then ``airflow dags delete``."""
    spec = stack.root / "team_a" / "specs" / "ghost.yaml"
    spec.write_text(textwrap.dedent(GHOST))
    proc = subprocess.run(
        [PY, "-c", MAKE_RUNS, str(spec)],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RUNS=")), None)
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    import json

    (run,) = json.loads(line[len("RUNS=") :])
    assert run["state"] == "success", run
    # while Airflow knows the DAG, alice's team reads it
    assert page(stack, _path(run), user="alice").status_code == 200
    deleted = subprocess.run(
        [AIRFLOW, "dags", "delete", "-y", "prov_ghost"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    time.sleep(2.5)  # the endpoint caches a user's readable DAGs for 2 s
    yield run
    spec.unlink()


def _path(run: dict[str, Any]) -> str:
    return f"/twinprov/runs/prov_ghost/{quote(run['run_id'], safe='')}"


def test_runs_of_a_deleted_dag_are_admin_only_in_sparql(
    stack: Stack, ghost: dict[str, Any]
) -> None:
    deadline = time.monotonic() + 30
    while True:  # the endpoint loads what was published meanwhile
        dags = [r["dag"] for r in bindings(sparql(stack, RUNS_Q, user="admin"))]
        if "prov_ghost" in dags or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "prov_ghost" in dags
    alice = [r["dag"] for r in bindings(sparql(stack, RUNS_Q, user="alice"))]
    assert alice == ["prov_alpha"]
    label = PREFIXES + 'ASK { ?d rdfs:label "ghost_out" }'
    assert sparql(stack, label, user="admin").json()["boolean"] is True
    assert sparql(stack, label, user="alice").json()["boolean"] is False


def test_runs_of_a_deleted_dag_are_admin_only_in_pages_and_downloads(
    stack: Stack, ghost: dict[str, Any]
) -> None:
    path = _path(ghost)
    for suffix in ("", "/graph.svg", "/prov/prov.json", "/prov/prov.ttl", "/crate.zip"):
        resp = page(stack, path + suffix, user="alice")
        assert resp.status_code == 404, (suffix, resp.status_code)
        assert b"ghost output bytes" not in resp.content
    assert "prov_ghost" not in page(stack, "/twinprov/", user="alice").text
    assert page(stack, path, user="admin").status_code == 200
    crate = page(stack, path + "/crate.zip", user="admin")
    assert crate.status_code == 200, crate.text
    with zipfile.ZipFile(io.BytesIO(crate.content)) as z:
        assert any(z.read(n) == b"ghost output bytes" for n in z.namelist())
    assert "prov_ghost" in page(stack, "/twinprov/", user="admin").text
