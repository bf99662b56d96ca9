"""Real processes for the endpoint tests: an Airflow home in multi-team mode with two DAG bundles,
runs made through ``twinprov.dags.runner.run_workflow``, and a real ``airflow api-server`` on
127.0.0.1 (started once per session, stopped after).

Users (SimpleAuthManager, ``[core] simple_auth_manager_users`` + a passwords file):

* ``admin`` — role ADMIN: reads every DAG;
* ``alice`` — role VIEWER in team ``team_a``: reads only the DAGs of bundle ``team_a_dags``
  (the workflow ``prov_alpha``), not those of ``team_b_dags`` (``prov_beta``);
* ``bob`` — role VIEWER in team ``team_b``: a third user, for the per-user limits.

Everything here runs in subprocesses with its own AIRFLOW_HOME and TWINPROV_HOME, so the rest of
the test session (which has imported Airflow with another home) is not disturbed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO

PY = sys.executable
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
ROW_CAP = 100
TIME_LIMIT_S = 3

ALPHA = """
name: prov_alpha
description: two steps, the second derives a table from the first's output; its check fails (warn)
steps:
  - id: make
    command: [python, -c, "open('a.txt', 'w').write('alpha input')"]
    outputs: [{name: raw, path: a.txt, media_type: text/plain}]
  - id: derive
    command:
      - python
      - -c
      - "open('a.txt').read(); open('b.csv', 'w').write('x,1,42,'.replace(',', chr(10)))"
    inputs: [{name: raw, from: make.raw}]
    outputs:
      - name: table
        path: b.csv
        media_type: text/csv
        validation:
          on_failure: warn
          expectations:
            - {type: expect_column_values_to_be_between,
               kwargs: {column: x, min_value: 0, max_value: 10}}
"""

BETA = """
name: prov_beta
description: one step, in another team's bundle
steps:
  - id: only
    command: [python, -c, "open('c.txt', 'w').write('beta output')"]
    outputs: [{name: secret, path: c.txt, media_type: text/plain}]
"""

BUNDLE_DAG_FILE = '''"""Airflow DAG file of a test bundle: one DAG per twinprov spec in ./specs."""
from pathlib import Path

from twinprov.dags.factory import workflow_dags

globals().update(workflow_dags(Path(__file__).parent / "specs"))
'''

MAKE_RUNS = """
import json, sys
from twinprov.dags.runner import run_workflow
out = []
for spec in sys.argv[1:]:
    o = run_workflow(spec, {})
    out.append({"dag_id": o.dag_id, "run_id": o.run_id, "state": o.state})
print("RUNS=" + json.dumps(out))
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "endpoint: the SPARQL endpoint and pages in a real airflow api-server (on by default)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/endpoint" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.endpoint)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A started ``airflow api-server``."""

    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@dataclass
class Stack:
    """The test deployment: homes, environment, runs, the API server and tokens."""

    root: Path
    env: dict[str, str]
    airflow_home: Path
    twinprov_home: Path
    runs: dict[str, dict[str, Any]]
    server: Server | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        assert self.server is not None
        return self.server.base

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{self.twinprov_home / 'ledger.sqlite'}"

    @property
    def store_path(self) -> Path:
        return self.twinprov_home / "graph-store"

    def headers(self, user: str = "admin", **more: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}", **more}

    def run_graph(self, dag_id: str) -> str:
        return str(self.runs[dag_id]["graph"])


def _run(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> str:
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout


def start_api_server(env: dict[str, str], log: Path, timeout: float = 120) -> Server:
    """Start ``airflow api-server`` on a free port and wait until it answers."""
    port = free_port()
    handle = log.open("wb")
    proc = subprocess.Popen(
        [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"airflow api-server exited: {server.tail()}")
        try:
            if httpx.get(f"{server.base}/api/v2/monitor/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"airflow api-server did not answer in {timeout} s: {server.tail()}")


def token(base: str, user: str, password: str) -> str:
    resp = httpx.post(
        f"{base}/auth/token", json={"username": user, "password": password}, timeout=10
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["access_token"])


def _environment(root: Path, airflow_home: Path, twinprov_home: Path) -> dict[str, str]:
    bundles = [
        {
            "name": f"{team}_dags",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(root / team)},
            "team_name": team,
        }
        for team in ("team_a", "team_b")
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "TWINPROV_", "PYTEST_")) and k != "AIRFLOW_HOME"
    }
    env.update(
        AIRFLOW_HOME=str(airflow_home),
        TWINPROV_HOME=str(twinprov_home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__MULTI_TEAM="True",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,alice:viewer:team_a,bob:viewer:team_b",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(root / "passwords.json"),
        AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST=json.dumps(bundles),
        AIRFLOW__API_AUTH__JWT_SECRET="twinprov-endpoint-tests-" + "s" * 64,
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__TWINPROV__QUERY_ROW_CAP=str(ROW_CAP),
        AIRFLOW__TWINPROV__QUERY_TIME_LIMIT_SECONDS=str(TIME_LIMIT_S),
        AIRFLOW__TWINPROV__STORE_WAIT_SECONDS="1",
        AIRFLOW__TWINPROV__STORE_IDLE_SECONDS="0.3",
        AIRFLOW__TWINPROV__QUERY_MEMORY_MB="1024",
        PYTHONPATH=str(REPO),
    )
    return env


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Migrated Airflow DB, two teams, one run per team's workflow, a running API server."""
    root = tmp_path_factory.mktemp("endpoint")
    airflow_home, twinprov_home = root / "airflow", root / "home"
    airflow_home.mkdir()
    for team, spec_name, spec in (("team_a", "alpha", ALPHA), ("team_b", "beta", BETA)):
        (root / team / "specs").mkdir(parents=True)
        (root / team / f"{team}_workflows.py").write_text(BUNDLE_DAG_FILE)
        (root / team / "specs" / f"{spec_name}.yaml").write_text(textwrap.dedent(spec))
    (root / "passwords.json").write_text(
        json.dumps({"admin": "admin-pw", "alice": "alice-pw", "bob": "bob-pw"})
    )
    env = _environment(root, airflow_home, twinprov_home)
    _run([AIRFLOW, "db", "migrate"], env, root / "migrate.log", 180)
    for team in ("team_a", "team_b"):
        _run([AIRFLOW, "teams", "create", team], env, root / f"team-{team}.log", 60)
    # the runs and the API server start together: the server does not need the runs to start
    runs_log = (root / "runs.log").open("w")
    maker = subprocess.Popen(
        [
            PY,
            "-c",
            MAKE_RUNS,
            str(root / "team_a" / "specs" / "alpha.yaml"),
            str(root / "team_b" / "specs" / "beta.yaml"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=runs_log,
        text=True,
    )
    server = start_api_server(env, root / "api-server.log")
    try:
        out, _ = maker.communicate(timeout=300)
        runs_log.close()
        line = next((x for x in out.splitlines() if x.startswith("RUNS=")), None)
        assert maker.returncode == 0 and line, (root / "runs.log").read_text()[-3000:]
        from twinprov.provenance.ledger import Ledger

        ledger = Ledger(f"sqlite:///{twinprov_home / 'ledger.sqlite'}")
        runs: dict[str, dict[str, Any]] = {}
        for r in json.loads(line[len("RUNS=") :]):
            assert r["state"] == "success", r
            rec = ledger.run(r["dag_id"], r["run_id"])
            assert rec is not None and rec.published_digest, r
            runs[r["dag_id"]] = {**r, "graph": rec.publication["graph"], "record": rec}
        st = Stack(root, env, airflow_home, twinprov_home, runs, server)
        st.tokens = {
            "admin": token(server.base, "admin", "admin-pw"),
            "alice": token(server.base, "alice", "alice-pw"),
            "bob": token(server.base, "bob", "bob-pw"),
        }
        yield st
    finally:
        server.stop()
        if maker.poll() is None:
            maker.kill()
        print(f"\nendpoint test deployment under {root} (api-server log: {server.log})")


@pytest.fixture(scope="session")
def summaries(stack: Stack) -> dict[str, dict[str, Any]]:
    """``twinprov show --json`` of each run."""
    out = {}
    for dag_id, r in stack.runs.items():
        proc = subprocess.run(
            [PY, "-m", "twinprov.cli", "show", f"{dag_id}/{r['run_id']}", "--json"],
            env=stack.env,
            capture_output=True,
            text=True,
            check=True,
        )
        out[dag_id] = json.loads(proc.stdout)
    return out
