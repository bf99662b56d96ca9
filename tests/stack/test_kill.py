"""``kill -9`` of a task process in the middle of a step and in the middle of capture: after
Airflow's retry the run graph has one activity per try, no duplicate entities, no orphan.

The task process is Airflow's task runner (the child of the LocalExecutor's supervisor that runs
the operator and the listener). "Mid-capture" is made exact with PostgreSQL itself: the test holds
a lock on the ledger's event table, so the listener's ``success`` insert waits; the process is
killed while its insert is waiting (found through ``pg_stat_activity`` and its TCP port).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from tests.stack import checks
from tests.stack.services import Stack
from twinprov.provenance.workspace import workspace_dir

DAG = "stack_kill"


def _hold_process(ws: Path, timeout: float = 120) -> psutil.Process:
    """The first try's step program (``stack_hold.py``) running in workspace ``ws``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in psutil.process_iter(["cmdline", "cwd"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if "stack_hold.py" in cmd and "stepwrap" not in cmd and p.info["cwd"] == str(ws):
                return p
        time.sleep(0.2)
    raise AssertionError(f"the step never started in {ws}")


def _task_runner(step: psutil.Process) -> psutil.Process:
    runner = step.parent().parent()  # step program <- step wrapper <- task runner
    assert runner.cmdline()[0].startswith("airflow worker"), runner.cmdline()
    return runner


def _check_graph(stack: Stack, run_id: str) -> dict[str, Any]:
    """One activity per try Airflow made, no duplicate entity, no orphan; what the graph says of
    each try of ``victim`` next to what Airflow says."""
    rec = checks.run_record(stack, DAG, run_id)
    assert rec.published_digest == rec.stored_digest
    graph = rec.publication["graph"]
    triples = checks.store_triples(stack, graph)
    assert triples == checks.turtle_triples(checks.published_turtle(rec).read_bytes())
    airflow = {
        t["try_number"]: t["state"]
        for t in stack.rest("GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/victim/tries")[
            "task_instances"
        ]
    }
    got = checks.tries_in(triples)
    assert got == {("first", 1): 1, **{("victim", n): 1 for n in airflow}}, (got, airflow)
    files = checks.subjects_by_type(triples, checks.TP + "DataFile")
    locations = [o for s, p, o in triples if s in files and p == f"<{checks.PROV}atLocation>"]
    assert len(locations) == len(set(locations)), f"duplicate entities: {sorted(locations)}"
    assert checks.orphans(triples, graph) == []
    recorded = {}
    for n in airflow:
        act = f"/task/victim/-1/{n}>"
        state = next(
            checks.ox_value(o)
            for s, p, o in triples
            if p == f"<{checks.TP}state>" and s.endswith(act)
        )
        outputs = sum(
            1 for s, p, o in triples if p == f"<{checks.PROV}wasGeneratedBy>" and o.endswith(act)
        )
        recorded[n] = (state, outputs)
    return {
        "triples": len(triples),
        "entities": len(files),
        "airflow": airflow,
        "graph": recorded,
    }


def test_kill_9_mid_step(stack: Stack) -> None:
    run_id = stack.trigger(DAG, {"seed": 1})
    ws = workspace_dir(stack.twinprov_home / "runs", DAG, run_id)
    step = _hold_process(ws)
    wrapper = step.parent()
    runner = _task_runner(step)
    os.kill(runner.pid, signal.SIGKILL)
    deadline = time.monotonic() + 15  # the wrapper's grace for the command is 5 s
    while time.monotonic() < deadline:
        survivors = [p for p in (step, wrapper) if p.is_running() and p.status() != "zombie"]
        if not survivors:
            break
        time.sleep(0.2)
    for p in survivors:  # the test's own leftovers: end them by pid
        p.kill()
    states = stack.wait_runs(DAG, [run_id], timeout=300)
    assert states[run_id] == "success"
    found = _check_graph(stack, run_id)
    assert len(found["airflow"]) == 2 and found["airflow"][2] == "success", found
    assert found["graph"][2] == ("success", 1) and found["entities"] == 3, found
    # the killed try is recorded as such, not left "running" — in the graph and in the crate
    assert found["graph"][1] == ("interrupted", 0), found
    crate = checks.run_record(stack, DAG, run_id).publication["crate"]
    graph = json.loads((Path(crate) / "ro-crate-metadata.json").read_text())["@graph"]
    status = {e["@id"]: e.get("actionStatus") for e in graph if e.get("@type") == "CreateAction"}
    assert status["#try/victim/1"] == "http://schema.org/FailedActionStatus", status
    assert status["#try/victim/2"] == "http://schema.org/CompletedActionStatus", status
    print(
        f"\nkill -9 mid-step: task runner {runner.pid} killed; Airflow retried; run graph "
        f"{found['triples']} triples, 1 activity per try (victim tries, Airflow: "
        f"{found['airflow']}, graph (state, outputs): {found['graph']}), {found['entities']} "
        f"entities, 0 duplicates, 0 orphans in the graph; step processes left running by the "
        f"killed try: {len(survivors)}"
    )
    assert survivors == [], f"{len(survivors)} step process(es) outlived the killed task"


def test_kill_9_mid_capture(stack: Stack) -> None:
    import psycopg2

    run_id = stack.trigger(DAG, {"seed": 2})
    ws = workspace_dir(stack.twinprov_home / "runs", DAG, run_id)
    step = _hold_process(ws)
    runner = _task_runner(step)
    lock = psycopg2.connect(
        host="127.0.0.1",
        port=stack.pg.port,
        user="twinprov",
        password=stack.passwords["twinprov"],
        dbname="twinprov",
    )
    killed_while = ""
    try:
        with lock.cursor() as cur:
            cur.execute("LOCK TABLE twinprov_task_events IN SHARE ROW EXCLUSIVE MODE")
        (ws / ".victim.go").write_text("go")  # the step ends; the listener's insert waits
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline:
            rows = stack.pg.execute(
                "SELECT client_port, query FROM pg_stat_activity WHERE datname = 'twinprov' "
                "AND wait_event_type = 'Lock' AND query ILIKE 'INSERT INTO twinprov_task_events%'"
            )
            port = rows[0][0] if rows else None
            killed_while = rows[0][1][:60] if rows else ""
            time.sleep(0.1)
        assert port is not None, "the listener's insert never waited on the lock"
        owners = {c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port}
        assert owners == {runner.pid}, (owners, runner.pid)
        os.kill(runner.pid, signal.SIGKILL)
    finally:
        lock.rollback()
        lock.close()
    states = stack.wait_runs(DAG, [run_id], timeout=300)
    assert states[run_id] == "success"
    found = _check_graph(stack, run_id)
    lost = [
        n
        for n, state in found["airflow"].items()
        if state == "success" and found["graph"][n] != ("success", 1)
    ]
    print(
        f"\nkill -9 mid-capture: task runner {runner.pid} killed while its ledger insert waited "
        f"({killed_while!r}…); run graph {found['triples']} triples, 1 activity per try (victim "
        f"tries, Airflow: {found['airflow']}, graph (state, outputs): {found['graph']}), "
        f"{found['entities']} entities, 0 duplicates, 0 orphans; successful tries whose "
        f"success event was lost: {len(lost)}"
    )
    assert lost == [], "the success capture of a killed task process was lost"
