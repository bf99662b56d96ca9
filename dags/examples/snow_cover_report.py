"""A hand-written Airflow DAG that twinprov records without any change to its code.

It is tagged ``twinprov`` (captured under the default ``[twinprov] capture = tagged``); its
files are Airflow Assets with ``file://`` URIs: the tasks declare them as ``outlets`` and
``inlets``, and twinprov hashes them after each try. A BashOperator writes daily snow depths; a
TaskFlow task reads them and writes a summary (with an asset event extra) and a report whose name
is known only at run time (an Asset added to an ``AssetAlias``: twinprov hashes it too). The
files live under ``$TWINPROV_HOME/data/examples`` (``TWINPROV_HOME`` defaults to ``./.twinprov``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Asset, AssetAlias, dag, task

HOME = Path(os.environ.get("TWINPROV_HOME", ".twinprov")).expanduser().resolve()
DATA = HOME / "data" / "examples"
DEPTHS = Asset(uri=(DATA / "snow_depths.csv").as_uri())
SUMMARY = Asset(uri=(DATA / "snow_summary.json").as_uri())
REPORTS = AssetAlias(name="snow_reports")
"""Files named only at run time (one report per station) are added to this alias."""


@dag(
    dag_id="snow_cover_report",
    schedule=None,
    tags=["twinprov", "example"],
    params={"station": "Weissfluhjoch"},
    description="Daily snow depths of one station, summarised (a hand-written example DAG).",
)
def snow_cover_report() -> None:
    measure = BashOperator(
        task_id="measure_snow_depth",
        bash_command=(
            f'mkdir -p "{DATA}" && printf "day,depth_cm\\n1,112\\n2,118\\n3,121\\n4,117\\n" '
            f'> "{DATA / "snow_depths.csv"}"'
        ),
        outlets=[DEPTHS],
    )

    @task(inlets=[DEPTHS], outlets=[SUMMARY, REPORTS])
    def summarise(params: dict | None = None, outlet_events: Any = None) -> None:
        import csv
        import json

        with open(DATA / "snow_depths.csv", encoding="utf-8") as fh:
            depths = [int(row["depth_cm"]) for row in csv.DictReader(fh)]
        summary = {
            "station": (params or {}).get("station"),
            "days": len(depths),
            "max_depth_cm": max(depths),
            "mean_depth_cm": round(sum(depths) / len(depths), 1),
        }
        (DATA / "snow_summary.json").write_text(json.dumps(summary, sort_keys=True) + "\n")
        # a file whose name is known only now: an asset added to the alias (plain Airflow)
        report = DATA / f"report_{summary['station']}.txt".replace(" ", "_")
        report.write_text(f"{summary['station']}: max {summary['max_depth_cm']} cm\n")
        outlet_events[REPORTS].add(Asset(uri=report.as_uri()), extra={"kind": "report"})
        outlet_events[SUMMARY].extra = {"days": summary["days"]}

    measure >> summarise()


snow_cover_report()
