"""Throughput of the stack with Airflow's CeleryExecutor (natively: the services of
``tests/stack/services.py`` plus Redis and ``airflow celery worker`` processes, each with its own
``TWINPROV_HOME``, from ``tests/stack/workers.py``):

1. **Runs per minute** and **CPU seconds per run** (every process of the stack and the workers)
   of the 8-step DAG, with 1 and with 2 workers (``--concurrency`` tasks each), provenance
   **off** (``TWINPROV_CAPTURE=off`` for the scheduler and the workers) and **on**, alternating
   in one run; ratios off/on of throughput and on/off of CPU (goal <= 1.05 with 2 workers).
2. **Catch-up rate** into the Oxigraph server of the same deployment (``bench/stack_throughput.py``
   measures it the same way on the LocalExecutor stack: it should not change).

    python bench/celery_scale.py [--runs 10] [--rounds 1] [--concurrency 4] [--catchup-runs 400]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack_throughput import _tree_cpu_seconds, catch_up_rate, measure  # noqa: E402
from tests.stack.services import Stack, ensure_installed  # noqa: E402
from tests.stack.workers import Celery  # noqa: E402
from tests.stack.workflows import write_workflows  # noqa: E402

DAG = "stack_fan8"


def cpu_seconds(stack: Stack, celery: Celery) -> float:
    """CPU seconds so far of the stack's and the workers' process trees (see
    ``bench/stack_throughput.py``)."""
    roots = {d.pid for d in [*stack.daemons.values(), *celery.daemons.values()] if d.alive()}
    with contextlib.suppress(OSError, ValueError):
        roots.add(int((stack.pg.data / "postmaster.pid").read_text().split()[0]))
    return _tree_cpu_seconds({p for p in roots if p})


def workers_for(celery: Celery, n: int, capture: bool, concurrency: int) -> None:
    """Exactly ``n`` workers running, all with provenance on or off (the scheduler too)."""
    extra = {} if capture else {"TWINPROV_CAPTURE": "off"}
    celery.stop_workers()
    celery.stack.restart_scheduler({**celery.env, **extra})
    names = [f"w{i}" for i in range(1, n + 1)]
    for name in names:
        celery.start_worker(name, concurrency, extra, wait=False)
    for name in names:
        celery.wait_ready(name)


def phase(
    stack: Stack, celery: Celery, n: int, capture: bool, runs: int, seed0: int, concurrency: int
) -> tuple[float, float]:
    workers_for(celery, n, capture, concurrency)
    label = f"{n} worker(s), provenance {'on ' if capture else 'off'}"
    return measure(stack, runs, seed0, lambda: cpu_seconds(stack, celery), label)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="runs per phase")
    ap.add_argument("--rounds", type=int, default=1, help="off/on phase pairs per worker count")
    ap.add_argument("--concurrency", type=int, default=4, help="tasks at once per worker")
    ap.add_argument("--catchup-runs", type=int, default=400, help="pending runs to catch up")
    ap.add_argument("--no-catchup", action="store_true", help="measure runs/min only")
    ns = ap.parse_args()
    ensure_installed()
    stack = Stack.create()
    write_workflows(stack.workflows)
    celery = Celery(stack, Path(tempfile.mkdtemp(prefix="twinprov-celery-")))
    try:
        stack.start()
        stack.wait_dag(DAG)
        celery.start()
        print(f"stack up in {stack.started_in:.0f} s under {stack.root}; {os.cpu_count()} cores")
        phase(stack, celery, 1, True, 2, 1, ns.concurrency)  # warm-up, not counted
        results: dict[tuple[int, bool], list[tuple[float, float]]] = {}
        for n in (1, 2):
            for r in range(ns.rounds):
                for capture in (False, True):
                    seed = 10_000 * (n + 1) + 1000 * r + (500 if capture else 0)
                    got = phase(stack, celery, n, capture, ns.runs, seed, ns.concurrency)
                    results.setdefault((n, capture), []).append(got)
        for n in (1, 2):
            on = [r for r, _c in results[(n, True)]]
            off = [r for r, _c in results[(n, False)]]
            c_on = [c for _r, c in results[(n, True)]]
            c_off = [c for _r, c in results[(n, False)]]
            m_on, m_off = statistics.median(on), statistics.median(off)
            print(
                f"{n} worker(s): off {m_off:.2f} runs/min, on {m_on:.2f} runs/min, throughput "
                f"ratio off/on = {m_off / m_on:.3f}; CPU per run off "
                f"{statistics.median(c_off):.2f} s, on {statistics.median(c_on):.2f} s, ratio "
                f"on/off = {statistics.median(c_on) / statistics.median(c_off):.3f}"
                + (" (goal <= 1.05)" if n == 2 else "")
            )
        two, one = results[(2, True)], results[(1, True)]
        print(
            "scale-out with provenance on, 2 workers / 1 worker: "
            f"{statistics.median(r for r, _ in two) / statistics.median(r for r, _ in one):.2f}x "
            f"runs/min ({os.cpu_count()} cores shared by both workers and the stack)"
        )
        if not ns.no_catchup:
            catch_up_rate(stack, ns.catchup_runs, 1)
    finally:
        celery.stop_workers()
        if "redis" in celery.daemons:
            celery.daemons["redis"].stop()
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
