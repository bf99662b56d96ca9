"""Capture overhead: the same 10-task DAG of 1-second steps with twinprov's capture on and off.

Runs alternate (off, on, off, on, …) in one process through real Airflow ``dag.test()`` on a
throw-away SQLite metadata DB. "on" is everything twinprov adds: the listener writing the ledger
on every task state change, and the publish task (PROV files + Oxigraph graph). "off" sets
``TWINPROV_CAPTURE=off``: the listener returns at once and the publish task does nothing.
Prints the wall-time ratio on/off (goal ≤ 1.05) and the listener's own time per event.

    python bench/capture_overhead.py [--rounds 3] [--tasks 10] [--seconds 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml


def _spec(tasks: int, seconds: float) -> dict:
    steps = []
    for i in range(tasks):
        code = f"import time; time.sleep({seconds}); open('o{i}.txt', 'w').write('step {i}')"
        step = {
            "id": f"step_{i:02d}",
            "command": ["python", "-c", code],
            "outputs": [{"name": "out", "path": f"o{i}.txt", "media_type": "text/plain"}],
        }
        if i:
            step["needs"] = [f"step_{i - 1:02d}"]
        steps.append(step)
    return {"name": "capture_bench", "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=1.0)
    ns = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="twinprov-bench-"))
    os.environ["TWINPROV_HOME"] = str(root / "home")
    os.environ["AIRFLOW_HOME"] = str(root / "airflow")
    workflows = root / "workflows"
    workflows.mkdir()
    spec = workflows / "capture_bench.yaml"
    spec.write_text(yaml.safe_dump(_spec(ns.tasks, ns.seconds)))

    from twinprov.dags.runner import ensure_database, prepare_environment, run_workflow

    prepare_environment()
    ensure_database()
    from twinprov.airflow import listener

    run_workflow(str(spec), {})  # warm-up: imports, first DB writes, store creation
    times: dict[str, list[float]] = {"off": [], "on": []}
    events_on = 0
    listener_s = 0.0
    for r in range(ns.rounds):
        for mode in ("off", "on"):
            os.environ["TWINPROV_CAPTURE"] = mode
            before = dict(listener.capture_stats)
            t0 = time.perf_counter()
            outcome = run_workflow(str(spec), {})
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
        f"\n{ns.tasks} tasks x {ns.seconds:g} s, {ns.rounds} rounds, medians: "
        f"off {off:.2f} s, on {on:.2f} s"
    )
    print(f"capture overhead ratio (on/off): {on / off:.3f}   (goal <= 1.05)")
    print(
        f"listener time per event: {1000 * listener_s / max(events_on, 1):.2f} ms "
        f"over {events_on} events"
    )


if __name__ == "__main__":
    main()
