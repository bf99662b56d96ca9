"""8 tasks in parallel x 25 runs through the real scheduler (LocalExecutor, parallelism 8): every
run graph complete and separate (no triple of one run in another's graph), ledger rows as
expected."""

from __future__ import annotations

import time

from tests.stack import checks
from tests.stack.services import Stack

RUNS = 25
WIDTH = 8
DAG = "stack_fan8"


def test_25_runs_of_8_parallel_tasks(stack: Stack) -> None:
    t0 = time.monotonic()
    seeds = {stack.trigger(DAG, {"seed": 5000 + i}): 5000 + i for i in range(RUNS)}
    states = stack.wait_runs(DAG, seeds, timeout=900)
    elapsed = time.monotonic() - t0
    assert set(states.values()) == {"success"}, states

    led = checks.ledger(stack)
    graphs = {rid: checks.graph_iri(DAG, rid) for rid in seeds}
    counts = checks.store_counts(stack)
    triples = {rid: checks.store_triples(stack, g) for rid, g in graphs.items()}
    generated = {
        rid: {s for s, p, o in t if p == f"<{checks.PROV}wasGeneratedBy>"}
        for rid, t in triples.items()
    }
    events = 0
    for rid in seeds:
        ev = led.events(DAG, rid)
        events += len(ev)
        # ledger: running + success for each of the 8 steps and the publish task
        keys = sorted((e.task_id, e.try_number, e.state) for e in ev)
        expected = sorted(
            (t, 1, s)
            for t in [*(f"s{i}" for i in range(1, WIDTH + 1)), "publish_provenance"]
            for s in ("running", "success")
        )
        assert keys == expected, rid
        rec = led.run(DAG, rid)
        assert rec is not None and rec.state == "success" and rec.stored_digest, rid
        assert rec.published_digest == rec.stored_digest, rid

        mine = triples[rid]
        assert counts[graphs[rid]] == len(mine)
        assert mine == checks.turtle_triples(checks.published_turtle(rec).read_bytes()), rid
        # complete: one try per step, each with its output, all linked to the run
        assert checks.tries_in(mine) == {(f"s{i}", 1): 1 for i in range(1, WIDTH + 1)}, rid
        assert len(checks.subjects_by_type(mine, checks.TP + "DataFile")) == WIDTH + 1  # + spec
        assert checks.orphans(mine, graphs[rid]) == [], rid
        assert len(generated[rid]) == WIDTH, rid
        # separate: nothing of another run (its IRIs, its outputs) in this graph
        text = " ".join(" ".join(t) for t in mine)
        for other, g in graphs.items():
            if other != rid:
                assert g not in text, f"{rid}'s graph mentions run {other}"
                assert not any(e in text for e in generated[other]), (rid, other)
        assert f"<{graphs[rid]}>" in text
    rows_runs = sum(1 for r in led.runs() if r.dag_id == DAG and r.run_id in seeds)
    assert rows_runs == RUNS
    assert events == RUNS * (WIDTH + 1) * 2
    print(
        f"\nparallel: {RUNS} runs x {WIDTH} parallel steps in {elapsed:.0f} s "
        f"({RUNS / elapsed * 60:.1f} runs/min); ledger: {rows_runs} run rows, {events} event rows "
        f"(= {RUNS} x {WIDTH + 1} tasks x 2); store: {RUNS} separate run graphs, "
        f"{sum(len(t) for t in triples.values())} triples, each equal to its published PROV"
    )
