"""Capture overhead on a hand-written DAG: 10 BashOperator tasks of 1 second, each writing a
file declared as a ``file://`` Asset outlet (hashed after the try), tagged ``twinprov``.

Runs alternate (off, on, off, on, …) in one process through real Airflow ``dag.test()`` on a
throw-away SQLite metadata DB and DAGs folder. "on" is everything twinprov adds: the listener
writing the ledger on every task state change, hashing the outlets, and the publication from
``on_dag_run_success`` (PROV files, Oxigraph graph, crate). "off" sets ``TWINPROV_CAPTURE=off``.
Prints the wall-time ratio on/off (goal ≤ 1.05). The Airflow OpenLineage provider's overhead on
the same DAG is measured only if the provider is installed (it is not a twinprov dependency).

    python bench/capture_overhead_dag.py [--rounds 3] [--tasks 10] [--seconds 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

DAG = '''
from pathlib import Path
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Asset

OUT = Path({out!r})
with DAG("capture_bench_dag", schedule=None, tags=["twinprov"]) as dag:
    prev = None
    for i in range({tasks}):
        target = OUT / f"o{{i}}.txt"
        t = BashOperator(
            task_id=f"task_{{i:02d}}",
            bash_command=f"sleep {seconds}; echo step {{i}} > {{target}}",
            outlets=[Asset(name=f"o{{i}}", uri=target.as_uri())],
        )
        if prev is not None:
            prev >> t
        prev = t
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=1.0)
    ns = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="twinprov-bench-dag-"))
    os.environ["TWINPROV_HOME"] = str(root / "home")
    os.environ["AIRFLOW_HOME"] = str(root / "airflow")
    dags = root / "dags"
    out = root / "out"
    dags.mkdir()
    out.mkdir()
    (dags / "capture_bench_dag.py").write_text(
        DAG.format(out=str(out), tasks=ns.tasks, seconds=ns.seconds)
    )
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    os.environ.pop("AIRFLOW__TWINPROV__CAPTURE", None)  # the default: tagged

    from twinprov.dags.runner import ensure_database, prepare_environment, run_workflow

    prepare_environment()
    ensure_database()
    from twinprov.airflow import listener

    run_workflow("capture_bench_dag", {})  # warm-up: imports, first DB writes, store creation
    times: dict[str, list[float]] = {"off": [], "on": []}
    events_on = 0
    listener_s = 0.0
    for r in range(ns.rounds):
        for mode in ("off", "on"):
            os.environ["TWINPROV_CAPTURE"] = mode
            before = dict(listener.capture_stats)
            t0 = time.perf_counter()
            outcome = run_workflow("capture_bench_dag", {})
            elapsed = time.perf_counter() - t0
            assert outcome.state == "success", outcome
            times[mode].append(elapsed)
            if mode == "on":
                events_on += int(listener.capture_stats["events"] - before["events"])
                listener_s += listener.capture_stats["seconds"] - before["seconds"]
            print(f"round {r + 1} {mode:>3}: {elapsed:6.2f} s")
    os.environ.pop("TWINPROV_CAPTURE", None)
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    print(
        f"\nhand-written DAG, {ns.tasks} tasks x {ns.seconds:g} s with file outlets, "
        f"{ns.rounds} rounds, medians: off {off:.2f} s, on {on:.2f} s"
    )
    print(f"capture overhead ratio (on/off): {on / off:.3f}   (goal <= 1.05)")
    print(
        f"listener time per event: {1000 * listener_s / max(events_on, 1):.2f} ms "
        f"over {events_on} events"
    )
    if importlib.util.find_spec("airflow.providers.openlineage") is None:
        print("OpenLineage provider: not installed, not measured")
    else:
        print(
            "OpenLineage provider: installed; its listener ran in both modes above (measure it "
            "alone with AIRFLOW__OPENLINEAGE__DISABLED=true in a second run of this script)"
        )


if __name__ == "__main__":
    main()
