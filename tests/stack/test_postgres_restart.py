"""PostgreSQL (Airflow's metadata database *and* the ledger) goes down in the middle of runs and
comes back: the listener's writes that failed meanwhile are kept (spool) and written to the ledger
later; nothing is lost.

Airflow's scheduler and dag-processor exit when their database goes away; in a deployment their
supervisor starts them again (``restart: always`` in docker-compose.yaml), so the test does the
same (:meth:`Stack.supervised`) and prints how many restarts that took.
"""

from __future__ import annotations

import time
from typing import Any

import psutil

from tests.stack import checks
from tests.stack.services import Stack
from twinprov.provenance.workspace import workspace_dir

DAG = "stack_fan8"
RUNS = 3
DOWN_S = 8


def _steps_running(stack: Stack, run_ids: list[str]) -> int:
    spaces = {str(workspace_dir(stack.twinprov_home / "runs", DAG, r)) for r in run_ids}
    n = 0
    for p in psutil.process_iter(["cmdline", "cwd"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "stack_step.py" in cmd and "stepwrap" not in cmd and p.info["cwd"] in spaces:
            n += 1
    return n


def _spooled(stack: Stack, run_ids: list[str]) -> int:
    """Events the listener could not write at the time (it says so in the task logs)."""
    n = 0
    for rid in run_ids:
        folder = stack.airflow_home / "logs" / f"dag_id={DAG}" / f"run_id={rid}"
        for log in folder.rglob("*.log"):
            n += log.read_text(errors="replace").count("the event waits in")
    return n


def _account(stack: Stack, run_ids: list[str]) -> dict[str, Any]:
    """Events the tries Airflow started imply, and those missing from the ledger."""
    led = checks.ledger(stack)
    missing: list[tuple[str, str, int, str]] = []
    expected_events = 0
    never_started = killed = 0
    for rid in run_ids:
        rec = led.run(DAG, rid)
        assert rec is not None and rec.published_digest, f"{rid} was never published"
        # what the ledger holds is what was published (the spool was ingested first)
        triples = checks.turtle_triples(checks.published_turtle(rec).read_bytes())
        assert {f"s{i}" for i in range(1, 9)} <= {k for k, _ in checks.tries_in(triples)}, rid
        have = {(e.task_id, e.try_number, e.state) for e in led.events(DAG, rid)}
        for ti in stack.task_instances(DAG, rid):
            tries = stack.rest(
                "GET", f"/dags/{DAG}/dagRuns/{rid}/taskInstances/{ti['task_id']}/tries"
            )["task_instances"]
            for t in tries:
                if t["state"] not in ("success", "failed"):
                    continue
                if not t.get("start_date"):
                    never_started += 1  # queued in the executor of a scheduler that died
                    continue
                key = (t["task_id"], t["try_number"])
                if t["state"] == "failed" and (*key, "failed") not in have:
                    killed += 1  # its process died with the scheduler: no listener ran
                    states_wanted: tuple[str, ...] = ("running",)
                else:
                    states_wanted = ("running", t["state"])
                for state in states_wanted:
                    expected_events += 1
                    if (*key, state) not in have:
                        missing.append((rid, *key, state))
    return {
        "expected": expected_events,
        "missing": missing,
        "never_started": never_started,
        "killed": killed,
    }


def test_postgres_restarted_mid_run(stack: Stack) -> None:
    run_ids = [stack.trigger(DAG, {"seed": 7000 + i, "delay": 4}) for i in range(RUNS)]
    deadline = time.monotonic() + 180
    while _steps_running(stack, run_ids) == 0:
        assert time.monotonic() < deadline, "no step started"
        time.sleep(0.2)
    in_flight = _steps_running(stack, run_ids)
    with stack.supervised() as restarts:
        stack.pg.stop("fast")
        time.sleep(DOWN_S)
        stack.pg.start()
        states = stack.wait_runs(DAG, run_ids, timeout=900)
    acc = _account(stack, run_ids)
    leftovers = list((stack.twinprov_home / "spool").glob("*.jsonl"))
    spooled = _spooled(stack, run_ids)
    print(
        f"\npostgres down {DOWN_S} s with {in_flight} steps in flight: run states "
        f"{sorted(states.values())}; Airflow restarts by the supervisor: {restarts or 'none'}; "
        f"tries that never started (their scheduler died): {acc['never_started']}, tries killed "
        f"with it: {acc['killed']}; events written to the spool while the database was down: "
        f"{spooled}; events the started tries imply: {acc['expected']}, missing from the "
        f"ledger: {len(acc['missing'])}; spool files left: {len(leftovers)}"
    )
    assert acc["missing"] == [], acc["missing"]
    assert leftovers == []


def test_ledger_database_unavailable_mid_run(stack: Stack) -> None:
    """Only the ledger's database goes away (connections refused, open ones cut) while Airflow
    keeps running: every listener write meanwhile goes to the spool, and the publication moves
    it into the ledger when the database is back."""
    run_ids = [stack.trigger(DAG, {"seed": 7100 + i, "delay": 2}) for i in range(RUNS)]
    deadline = time.monotonic() + 180
    while _steps_running(stack, run_ids) == 0:
        assert time.monotonic() < deadline, "no step started"
        time.sleep(0.2)
    in_flight = _steps_running(stack, run_ids)
    stack.pg.execute("ALTER DATABASE twinprov ALLOW_CONNECTIONS false")
    try:
        stack.pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'twinprov'"
        )
        time.sleep(DOWN_S)
    finally:
        stack.pg.execute("ALTER DATABASE twinprov ALLOW_CONNECTIONS true")
    states = stack.wait_runs(DAG, run_ids, timeout=900)
    acc = _account(stack, run_ids)
    leftovers = list((stack.twinprov_home / "spool").glob("*.jsonl"))
    spooled = _spooled(stack, run_ids)
    print(
        f"\nledger database unavailable {DOWN_S} s with {in_flight} steps in flight: run states "
        f"{sorted(states.values())}; events written to the spool meanwhile: {spooled}; events "
        f"the tries imply: {acc['expected']}, missing from the ledger: {len(acc['missing'])}; "
        f"spool files left: {len(leftovers)}"
    )
    assert set(states.values()) == {"success"}, states
    assert spooled > 0, "no listener write met the unavailable database"
    assert acc["missing"] == [], acc["missing"]
    assert leftovers == []
