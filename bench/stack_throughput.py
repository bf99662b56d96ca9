"""Throughput of the production stack, natively (the services of ``tests/stack/services.py``):

1. **Runs per minute** through Airflow's real scheduler (LocalExecutor, 8 parallel tasks) of a DAG
   of 8 independent steps plus the publish task, with provenance **on** (listener + ledger on
   PostgreSQL + publication to files, crate, STAC and the Oxigraph server) and **off**
   (``TWINPROV_CAPTURE=off`` for the scheduler and so every task: no capture, no publication),
   alternating off/on phases in one run; the ratio is off-throughput / on-throughput
   (goal <= 1.05).
2. **Catch-up rate** into the Oxigraph server, in triples per second: the graphs are dropped from
   the server, the ledger marks the runs pending, and ``provenance.publish.catch_up`` (what
   ``twinprov publish --pending`` and every query do) loads them back (goal >= 100k/s).

    python bench/stack_throughput.py [--runs 10] [--rounds 2] [--catchup-runs 400]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.stack.services import Stack, ensure_installed  # noqa: E402
from tests.stack.workflows import write_workflows  # noqa: E402

DAG = "stack_fan8"


def task_seconds(stack: Stack, run_ids: list[str]) -> tuple[float, float]:
    """Mean duration (s) of a step task and of the publish task in these runs (Airflow's own
    start/end of each task instance)."""
    steps: list[float] = []
    publish: list[float] = []
    for rid in run_ids:
        for ti in stack.task_instances(DAG, rid):
            (publish if ti["task_id"] == "publish_provenance" else steps).append(
                float(ti["duration"] or 0)
            )
    return statistics.mean(steps), statistics.mean(publish)


def phase(stack: Stack, capture: bool, runs: int, seed0: int) -> float:
    """Trigger ``runs`` runs at once; runs per minute until the last one ended."""
    stack.restart_scheduler(None if capture else {"TWINPROV_CAPTURE": "off"})
    t0 = time.monotonic()
    ids = [stack.trigger(DAG, {"seed": seed0 + i}) for i in range(runs)]
    states = stack.wait_runs(DAG, ids, timeout=1800)
    elapsed = time.monotonic() - t0
    bad = [r for r, s in states.items() if s != "success"]
    if bad:
        raise SystemExit(f"{len(bad)} run(s) failed: {bad[:3]}")
    rate = runs / elapsed * 60
    step_s, publish_s = task_seconds(stack, ids)
    print(f"  provenance {'on ' if capture else 'off'}: {runs} runs in {elapsed:6.1f} s "
          f"= {rate:5.2f} runs/min (mean task time: step {step_s:.2f} s, "
          f"publish {publish_s:.2f} s)")  # fmt: skip
    return rate


def catch_up_rate(stack: Stack, copies: int) -> tuple[int, int, float, float]:
    """Make ``copies`` pending runs from the published graphs, drop them from the server, time
    ``catch_up``; (runs, triples, seconds, seconds of the same PUTs without the ledger)."""
    import shutil

    import httpx
    from sqlalchemy import update

    from provenance.ids import Ids
    from provenance.ledger import Ledger, runs
    from provenance.publish import catch_up
    from provenance.store import open_store

    settings = stack.settings()
    led = Ledger(stack.ledger_url)
    published = [r for r in led.runs() if r.dag_id == DAG and r.published_digest]
    if not published:
        raise SystemExit("no published run to copy")
    # more runs for a steadier rate: copies of the published ones under new run ids (their own
    # graph IRIs), registered in the ledger as published but not stored
    src = published[0]
    ttl = Path(src.publication["files"]["prov.ttl"]).read_text()
    folder = stack.root / "bench-catchup"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    ids = Ids(settings.base_iri)
    for i in range(copies - len(published)):
        run_id = f"bench_copy_{i}"
        graph = ids.run(DAG, run_id)
        path = folder / f"{i}.ttl"
        path.write_text(ttl.replace(ids.run_local(DAG, src.run_id), ids.run_local(DAG, run_id)))
        led.ensure_run(DAG, run_id, {"bench": True})
        led.update_run(
            DAG,
            run_id,
            published_digest=f"copy{i}",
            publication={"files": {"prov.ttl": str(path)}, "graph": graph},
        )
    with led.engine.begin() as conn:
        conn.execute(update(runs).values(stored_digest=None))
    drop = httpx.post(f"{stack.oxigraph_base}/update", data={"update": "CLEAR ALL"}, timeout=600)
    drop.raise_for_status()
    pending = sum(1 for r in led.runs() if r.published_digest != r.stored_digest)
    t0 = time.monotonic()
    with open_store(settings) as store:
        loaded = catch_up(settings, store)
        elapsed = time.monotonic() - t0
        triples = sum(store.graph_size(g) for g in store.graphs())
    assert loaded == pending, (loaded, pending)
    # the graph store's own share: the same graphs PUT again, without the ledger's bookkeeping
    docs = [
        (r.publication["graph"], Path(r.publication["files"]["prov.ttl"]).read_bytes())
        for r in led.runs()
        if r.publication.get("graph")
    ]
    with open_store(settings) as store:
        t0 = time.monotonic()
        for graph, data in docs:
            store.replace_graph(graph, data)
        store_only = time.monotonic() - t0
    return loaded, triples, elapsed, store_only


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="runs per phase")
    ap.add_argument("--rounds", type=int, default=2, help="off/on phase pairs")
    ap.add_argument("--catchup-runs", type=int, default=400, help="pending runs to catch up")
    ap.add_argument("--keep", action="store_true", help="leave the stack running")
    ns = ap.parse_args()
    ensure_installed()
    stack = Stack.create()
    write_workflows(stack.workflows)
    try:
        stack.start()
        stack.wait_dag(DAG)
        print(f"stack up in {stack.started_in:.0f} s under {stack.root}; {os.cpu_count()} cores")
        phase(stack, True, 2, 1)  # warm-up (first parse, first connections), not counted
        on: list[float] = []
        off: list[float] = []
        for r in range(ns.rounds):
            off.append(phase(stack, False, ns.runs, 10_000 + 1000 * r))
            on.append(phase(stack, True, ns.runs, 20_000 + 1000 * r))
        stack.restart_scheduler()
        m_on, m_off = statistics.median(on), statistics.median(off)
        print(
            f"throughput: provenance off {m_off:.2f} runs/min, on {m_on:.2f} runs/min "
            f"(median of {ns.rounds}); ratio off/on = {m_off / m_on:.3f} (goal <= 1.05)"
        )
        loaded, triples, secs, store_only = catch_up_rate(stack, ns.catchup_runs)
        print(
            f"catch-up into the Oxigraph server (provenance.publish.catch_up): {loaded} run "
            f"graphs, {triples} triples in {secs:.2f} s = {triples / secs:,.0f} triples/s "
            f"({loaded / secs:.0f} graphs/s; goal >= 100,000 triples/s)"
        )
        print(
            f"  of which the graph store (the same {loaded} GSP PUTs alone): {store_only:.2f} s "
            f"= {triples / store_only:,.0f} triples/s; the rest is the ledger's per-run update"
        )
    finally:
        if ns.keep:
            print(f"stack left running: python -m tests.stack.services stop {stack.root}")
        else:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
