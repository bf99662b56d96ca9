"""A hand-written Airflow DAG that twinprov records without any change to its code.

It is tagged ``twinprov`` (captured under the default ``[twinprov] capture = tagged``); its
files are Airflow Assets with ``file://`` URIs: the tasks declare them as ``outlets`` and
``inlets``, and twinprov hashes them after each try. A BashOperator writes daily snow depths; a
TaskFlow task reads them and writes a summary. The files live under
``$TWINPROV_HOME/data/examples`` (``TWINPROV_HOME`` defaults to ``./.twinprov``).
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Asset, dag, task

HOME = Path(os.environ.get("TWINPROV_HOME", ".twinprov")).expanduser().resolve()
DATA = HOME / "data" / "examples"
DEPTHS = Asset(name="snow_depths", uri=(DATA / "snow_depths.csv").as_uri())
SUMMARY = Asset(name="snow_summary", uri=(DATA / "snow_summary.json").as_uri())


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

    @task(inlets=[DEPTHS], outlets=[SUMMARY])
    def summarise(params: dict | None = None) -> None:
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

    measure >> summarise()


snow_cover_report()
