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

    rows_runs, events, triples = checks.assert_fan_runs_complete(stack, DAG, seeds, WIDTH)
    print(
        f"\nparallel: {RUNS} runs x {WIDTH} parallel steps in {elapsed:.0f} s "
        f"({RUNS / elapsed * 60:.1f} runs/min); ledger: {rows_runs} run rows, {events} event rows "
        f"(= {RUNS} x {WIDTH + 1} tasks x 2); store: {RUNS} separate run graphs, "
        f"{triples} triples, each equal to its published PROV"
    )
