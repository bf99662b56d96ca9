"""Capture overhead on a hand-written DAG: 10 BashOperator tasks of 1 second, each writing a
file declared as a ``file://`` Asset outlet (hashed after the try), tagged ``twinprov``.

Every run is a fresh process (the OpenLineage provider decides at start-up whether its listener
is on), driving the DAG through real Airflow ``dag.test()`` on a throw-away SQLite metadata DB
and DAGs folder; modes alternate round by round:

* ``off`` — twinprov's capture off (``TWINPROV_CAPTURE=off``), OpenLineage disabled;
* ``twinprov`` — everything twinprov adds: the listener writing the ledger on every task state
  change, hashing the outlets, and the publication done in ``on_dag_run_success`` (PROV files,
  Oxigraph graph, crate);
* ``openlineage`` — twinprov off, the Airflow OpenLineage provider on with its file transport
  (only if the provider is installed; it is not a twinprov dependency).

Prints the wall-time ratios to ``off`` (twinprov's goal ≤ 1.05) of the DAG run (until it
ended, its publication in the DAG-run hook included) and twinprov/OpenLineage.

    python bench/capture_overhead_dag.py [--rounds 3] [--tasks 10] [--seconds 1]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
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


MODES = {
    "off": {"TWINPROV_CAPTURE": "off", "AIRFLOW__OPENLINEAGE__DISABLED": "true"},
    "twinprov": {"TWINPROV_CAPTURE": "on", "AIRFLOW__OPENLINEAGE__DISABLED": "true"},
    "openlineage": {"TWINPROV_CAPTURE": "off", "AIRFLOW__OPENLINEAGE__DISABLED": "false"},
}


def _child() -> None:
    """One timed run of the DAG in this process (after imports and the DB check)."""
    from twinprov.dags.runner import ensure_database, prepare_environment, run_workflow

    prepare_environment()
    ensure_database()
    from twinprov.airflow import dag_capture, listener

    t0 = time.perf_counter()
    outcome = run_workflow("capture_bench_dag", {}, wait=False)
    elapsed = time.perf_counter() - t0  # the DAG run, its publication (DAG-run hook) included
    assert outcome.state == "success", outcome
    stats = listener.capture_stats
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "events": stats["events"],
                "listener": stats["seconds"],
                "publish": dag_capture.publishing_seconds(),
            }
        )
    )


def has_provider() -> bool:
    """Whether Airflow's OpenLineage provider is installed, without importing ``airflow`` (which
    would read Airflow's configuration before this process has chosen its ``AIRFLOW_HOME``)."""
    try:
        importlib.metadata.distribution("apache-airflow-providers-openlineage")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def prepare(tasks: int, seconds: float) -> dict[str, str]:
    """A throw-away home with the DAG in its DAGs folder; the environment of a timed child run
    (the provider's file transport writes to ``openlineage.jsonl`` there)."""
    root = Path(tempfile.mkdtemp(prefix="twinprov-bench-dag-"))
    dags = root / "dags"
    out = root / "out"
    dags.mkdir()
    out.mkdir()
    dag = DAG.format(out=str(out), tasks=tasks, seconds=seconds)
    (dags / "capture_bench_dag.py").write_text(dag)
    base = dict(
        os.environ,
        TWINPROV_HOME=str(root / "home"),
        AIRFLOW_HOME=str(root / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        TWINPROV_BENCH_CHILD="1",
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
            {"type": "file", "log_file_path": str(root / "openlineage.jsonl"), "append": True}
        ),
    )
    base.pop("AIRFLOW__TWINPROV__CAPTURE", None)  # the default: tagged
    return base


def run_once(base: dict[str, str], env: dict[str, str], label: str) -> dict[str, float]:
    """One timed run of the DAG in a fresh process with ``env`` on top of ``base``."""
    proc = subprocess.run(
        [sys.executable, __file__], env={**base, **env},
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{label} run failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    if os.environ.get("TWINPROV_BENCH_CHILD"):
        _child()
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=1.0)
    ns = ap.parse_args()

    base = prepare(ns.tasks, ns.seconds)
    modes = ["off", "twinprov"]
    if has_provider():
        modes.append("openlineage")

    def run(mode: str) -> dict[str, float]:
        return run_once(base, MODES[mode], mode)

    run("off")  # warm-up: the metadata DB, caches, the graph store
    times: dict[str, list[float]] = {m: [] for m in modes}
    events = listener_s = 0.0
    for r in range(ns.rounds):
        for mode in modes:
            got = run(mode)
            times[mode].append(got["seconds"])
            if mode == "twinprov":
                events += got["events"]
                listener_s += got["listener"]
            extra = f" (publication {got['publish']:.2f} s)" if mode == "twinprov" else ""
            print(f"round {r + 1} {mode:>11}: {got['seconds']:6.2f} s{extra}", flush=True)
    med = {m: statistics.median(v) for m, v in times.items()}
    print(
        f"\nhand-written DAG, {ns.tasks} tasks x {ns.seconds:g} s with file outlets, "
        f"{ns.rounds} rounds, medians: " + ", ".join(f"{m} {v:.2f} s" for m, v in med.items())
    )
    print(f"twinprov capture overhead ratio (twinprov/off): {med['twinprov'] / med['off']:.3f}"
          "   (goal <= 1.05; the DAG run with its publication)")
    print(f"listener time per event: {1000 * listener_s / max(events, 1):.2f} ms "
          f"over {int(events)} events")
    if "openlineage" in med:
        print(f"OpenLineage provider overhead ratio (openlineage/off): "
              f"{med['openlineage'] / med['off']:.3f}")
        print(f"twinprov / OpenLineage wall time: {med['twinprov'] / med['openlineage']:.3f}")
    else:
        print("OpenLineage provider: not installed, not measured")


if __name__ == "__main__":
    main()
