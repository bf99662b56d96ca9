"""What OpenLineage emission costs, in one run of this file:

(a) publication of the demo run with twinprov's OpenLineage events on (file transport) against
    off: ``publish_run`` of one demo run, alternately with ``Settings.openlineage`` True and
    False, in this process;
(b) capture overhead on the same 10-task hand-written DAG as ``bench/capture_overhead_dag.py``
    (its DAG, its fresh-process runs): twinprov with PROV + OpenLineage (file transport, the
    Airflow provider off) against Airflow's OpenLineage provider alone (file transport), and
    both against no capture.

Prints both ratios.

    python bench/openlineage_cost.py [--rounds 5] [--dag-rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import capture_overhead_dag as dagbench  # noqa: E402


def publication_ratio(rounds: int) -> float:
    """(a): median publication time of the demo run with OpenLineage on / off."""
    root = Path(tempfile.mkdtemp(prefix="twinprov-bench-ol-"))
    os.environ["TWINPROV_HOME"] = str(root / "home")
    os.environ["AIRFLOW_HOME"] = str(root / "airflow")
    os.environ["AIRFLOW__OPENLINEAGE__DISABLED"] = "true"  # the provider: not measured here
    os.environ["OPENLINEAGE__TRANSPORT__TYPE"] = "file"
    os.environ["OPENLINEAGE__TRANSPORT__LOG_FILE_PATH"] = str(root / "lineage.ndjson")
    os.environ["OPENLINEAGE__TRANSPORT__APPEND"] = "true"
    from twinprov.app.publish import publish_run
    from twinprov.dags.runner import ensure_database, prepare_environment, run_workflow
    from twinprov.provenance.config import Settings

    prepare_environment()
    ensure_database()
    outcome = run_workflow("drought_early_warning", {})
    assert outcome.state == "success", outcome
    off = replace(Settings.load(), openlineage=False)
    on = replace(off, openlineage=True)
    publish_run(on, outcome.dag_id, outcome.run_id)  # warm: imports, first writes
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for settings in (off, on):
            t0 = time.perf_counter()
            pub = publish_run(settings, outcome.dag_id, outcome.run_id)
            times[settings.openlineage].append(time.perf_counter() - t0)
            assert not pub.gaps, pub.gaps
    events = len((root / "lineage.ndjson").read_text().splitlines())
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"(a) publish_run of the demo run, {rounds} rounds alternating, medians: "
        f"OpenLineage off {med[False]:.3f} s, on {med[True]:.3f} s "
        f"({events // (rounds + 1)} events per publication, file transport)"
    )
    return med[True] / med[False]


def capture_ratios(rounds: int) -> tuple[float, float, float]:
    """(b): medians of twinprov (PROV + OpenLineage) / provider alone, and each / off."""
    base = dagbench.prepare(10, 1.0)
    ol_file = str(Path(base["TWINPROV_HOME"]).parent / "twinprov-lineage.ndjson")
    modes = {
        "off": dagbench.MODES["off"],
        "twinprov+OL": {
            **dagbench.MODES["twinprov"],  # the provider off
            "AIRFLOW__TWINPROV__OPENLINEAGE": "on",
            "OPENLINEAGE__TRANSPORT__TYPE": "file",
            "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": ol_file,
            "OPENLINEAGE__TRANSPORT__APPEND": "true",
        },
        "provider": dagbench.MODES["openlineage"],  # twinprov off
    }
    dagbench.run_once(base, modes["off"], "warm-up")
    times: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(rounds):
        for mode, env in modes.items():
            got = dagbench.run_once(base, env, mode)
            times[mode].append(got["seconds"])
            print(f"    round {r + 1} {mode:>11}: {got['seconds']:6.2f} s", flush=True)
    assert Path(ol_file).is_file(), "twinprov sent no OpenLineage events"
    med = {m: statistics.median(v) for m, v in times.items()}
    print(
        f"(b) hand-written DAG, 10 tasks x 1 s, {rounds} rounds, medians: "
        + ", ".join(f"{m} {v:.2f} s" for m, v in med.items())
    )
    return (
        med["twinprov+OL"] / med["provider"],
        med["twinprov+OL"] / med["off"],
        med["provider"] / med["off"],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="publications per setting (a)")
    ap.add_argument("--dag-rounds", type=int, default=2, help="runs per mode (b)")
    ns = ap.parse_args()
    if not dagbench.has_provider():
        raise SystemExit("install the dev extras: apache-airflow-providers-openlineage is needed")
    ratios = capture_ratios(ns.dag_rounds)  # (b) first: fresh processes, before (a) imports
    pub = publication_ratio(ns.rounds)
    print(f"\n(a) publication with OpenLineage on / off:                  {pub:.3f}")
    print(f"(b) twinprov (PROV + OpenLineage) / OpenLineage provider alone: {ratios[0]:.3f}")
    print(f"    twinprov (PROV + OpenLineage) / no capture:              {ratios[1]:.3f}")
    print(f"    OpenLineage provider alone / no capture:                 {ratios[2]:.3f}")


if __name__ == "__main__":
    main()
