"""Workers as on separate machines: Airflow's CeleryExecutor with a Redis broker and Celery
workers started as separate processes, each with its own ``TWINPROV_HOME`` (its own spool), one
shared folder of run folders (``[twinprov] shared_dir``), against the stack's PostgreSQL ledger and
Oxigraph server. Nothing is faked. "Worker w3 cannot reach PostgreSQL" is real too: its ledger URL
names a port on 127.0.0.1 where nothing listens (a network cut between that machine and the
database), and it comes back with the real URL.

``TWINPROV_CELERY_RUNS`` sets the runs of the parallel test: 10 by default, to keep ``make test``
lean on a 2-core machine; the full size is ``TWINPROV_CELERY_RUNS=25``. ``bench/celery_scale.py``
measures throughput.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import checks
from tests.stack.services import Stack, free_port, wait_until
from tests.stack.workers import Celery, worker_refuses_to_start

DAG = "stack_fan8"
WIDTH = 8
RUNS = int(os.environ.get("TWINPROV_CELERY_RUNS", "10"))
OUTSTANDING_WAIT_S = 10


@pytest.fixture(scope="module")
def celery(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Celery]:
    """Redis, the scheduler on the CeleryExecutor, and two workers w1, w2 (4 tasks each)."""
    c = Celery(
        stack,
        tmp_path_factory.mktemp("celery"),
        settings={
            "AIRFLOW__TWINPROV__SPOOL_DRAIN_SECONDS": "2",
            "AIRFLOW__TWINPROV__OUTSTANDING_WAIT_SECONDS": str(OUTSTANDING_WAIT_S),
        },
    )
    try:
        c.start()
        for name in ("w1", "w2"):
            c.start_worker(name, wait=False)
        for name in ("w1", "w2"):
            c.wait_ready(name)
        yield c
    finally:
        c.stop()
        print(f"\ncelery workers stopped (logs in {c.root / 'logs'})")


def test_a_worker_without_a_shared_folder_refuses_to_start(stack: Stack, celery: Celery) -> None:
    proc = worker_refuses_to_start(stack, celery.env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert "set [twinprov] shared_dir (AIRFLOW__TWINPROV__SHARED_DIR)" in out, out[-2000:]


def test_runs_over_two_workers_lose_nothing(stack: Stack, celery: Celery) -> None:
    before = {w: celery.executed(w) for w in ("w1", "w2")}
    t0 = time.monotonic()
    seeds = {stack.trigger(DAG, {"seed": 7000 + i}): 7000 + i for i in range(RUNS)}
    states = stack.wait_runs(DAG, seeds, timeout=900)
    elapsed = time.monotonic() - t0
    assert set(states.values()) == {"success"}, states

    rows, events, triples = checks.assert_fan_runs_complete(stack, DAG, seeds, WIDTH)
    executed = {w: celery.executed(w) - n for w, n in before.items()}
    assert all(executed.values()), f"a worker ran nothing: {executed}"
    assert sum(executed.values()) == RUNS * (WIDTH + 1), executed
    for w in ("w1", "w2"):
        assert celery.spooled(w) == [], f"{w}'s spool kept events"
    print(
        f"\ncelery: {RUNS} runs x {WIDTH} parallel steps over 2 workers {executed} in "
        f"{elapsed:.0f} s; ledger {rows} runs, {events} events; {triples} triples, every run "
        "graph equal to its published PROV"
    )


def test_a_killed_workers_events_arrive_when_it_is_back(stack: Stack, celery: Celery) -> None:
    """w3 runs tasks while it cannot reach the ledger (its events wait in its spool), is killed
    (``kill -9`` of its process group) mid-run, and restarted later with the ledger reachable:
    the publish tasks (on w1, w2) publish with the gap ``events`` after a bounded wait; w3's
    drain at start brings the events in and publishes the runs again, complete."""
    cut = stack.pg.url("twinprov", stack.passwords["twinprov"], "twinprov").replace(
        f":{stack.pg.port}/", f":{free_port()}/"
    )
    celery.start_worker("w3", concurrency=2, extra_env={"AIRFLOW__TWINPROV__LEDGER_URL": cut})
    seeds = {stack.trigger(DAG, {"seed": 7500 + i, "delay": 1}): 7500 + i for i in range(6)}

    def w3_mid_run() -> bool:
        """w3 has ended a task and is running another (events in its spool say so)."""
        evs = celery.spooled("w3")
        tries = {(e["run_id"], e["task_id"], e["try_number"]) for e in evs}
        ended = {
            (e["run_id"], e["task_id"], e["try_number"]) for e in evs if e["state"] != "running"
        }
        return any(e["state"] == "success" for e in evs) and bool(tries - ended)

    wait_until(w3_mid_run, "w3 in the middle of a task, after one ended", 300, celery.daemons["w3"])
    celery.kill("w3")
    spooled = celery.spooled("w3")
    states = stack.wait_runs(DAG, seeds, timeout=600)

    led = checks.ledger(stack)
    key = ("dag_id", "run_id", "task_id", "map_index", "try_number", "state")
    in_ledger = {tuple(getattr(e, k) for k in key) for rid in seeds for e in led.events(DAG, rid)}
    waiting = {tuple(e[k] for k in key) for e in spooled}
    assert waiting and not waiting & in_ledger, "w3's events reached the ledger while cut off"
    gapped = {}
    for rid in seeds:
        rec = checks.run_record(stack, DAG, rid)
        gap = (rec.publication.get("gaps") or {}).get("events")
        if gap:
            gapped[rid] = gap
    w3_steps = {(e[1], e[2]) for e in waiting if e[5] == "success" and e[2] != "publish_provenance"}
    published_meanwhile = [rid for rid, task in w3_steps if rid in gapped]
    assert published_meanwhile, f"no run published with the gap 'events': {gapped}"
    for rid, task in w3_steps:
        if rid in gapped:
            assert task in gapped[rid], (rid, task, gapped[rid])

    celery.start_worker("w3", concurrency=2)  # the network is back; the same home

    def republished() -> bool:
        if celery.spooled("w3"):
            return False
        for rid in seeds:
            rec = led.run(DAG, rid)
            if rec is None or not rec.published_digest or rec.published_digest != rec.stored_digest:
                return False
            if "events" in (rec.publication.get("gaps") or {}):
                return False
        return True

    wait_until(republished, "runs published again after w3's drain", 180, celery.daemons["w3"])
    in_ledger = {tuple(getattr(e, k) for k in key) for rid in seeds for e in led.events(DAG, rid)}
    assert waiting <= in_ledger, "events of w3 lost"
    for rid in seeds:
        rec = checks.run_record(stack, DAG, rid)
        graph = checks.graph_iri(DAG, rid)
        mine = checks.store_triples(stack, graph)
        assert mine == checks.turtle_triples(checks.published_turtle(rec).read_bytes()), rid
        tries = checks.tries_in(mine)
        assert set(tries.values()) == {1}, f"{rid}: duplicate activities {tries}"
        steps = {
            (e.task_id, e.try_number)
            for e in led.events(DAG, rid)
            if e.task_id != "publish_provenance"
        }
        assert set(tries) == steps, rid  # every task try of the ledger, in the graph
        if states[rid] == "success":
            assert set(tries) == {(f"s{i}", 1) for i in range(1, WIDTH + 1)}, rid
        assert checks.orphans(mine, graph) == [], rid
    print(
        f"\nkilled worker: {len(waiting)} events waited in w3's spool; {len(gapped)} of "
        f"{len(seeds)} runs published with the gap 'events' meanwhile ({len(published_meanwhile)}"
        f" of w3's steps); after w3 came back every run was published again, complete "
        f"(run states {sorted(states.values())})"
    )
    assert Path(celery.home("w3")).is_dir()
