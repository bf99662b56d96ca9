"""A hand-written DAG scheduled on a twinprov workflow's output (data-aware scheduling).

Every spec output is an Airflow Asset ``twinprov://<workflow>/<step>/<output>``; this DAG runs
each time the demo workflow ``drought_early_warning`` publishes a checked region summary. The
asset event's ``extra`` says where the bytes are and their sha256 (and the upstream run, crate
and validation verdict): the DAG reads the file from there, and twinprov links this run to the
upstream output entity by that checksum. Plain Airflow code, tagged ``twinprov``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, dag, task

HOME = Path(os.environ.get("TWINPROV_HOME", ".twinprov")).expanduser().resolve()
DIGEST = HOME / "data" / "examples" / "drought_alert_digest.txt"
REGION_SUMMARY = Asset(uri="twinprov://drought_early_warning/classify_hazard/summary")


@dag(
    dag_id="drought_alert_digest",
    schedule=[REGION_SUMMARY],
    tags=["twinprov", "example"],
    description="Alert digest of each new drought region summary (a hand-written example DAG).",
)
def drought_alert_digest() -> None:
    @task(outlets=[Asset(uri=DIGEST.as_uri())])
    def write_digest(triggering_asset_events: Any = None) -> None:
        import csv

        lines = []
        for event in (triggering_asset_events or {}).get(REGION_SUMMARY, []):
            extra = event.extra or {}
            with open(extra["path"], encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            lines.append(
                f"{extra.get('run')}: {len(rows)} regions (sha256 {extra.get('sha256')}, "
                f"validation {extra.get('validation')})"
            )
        DIGEST.parent.mkdir(parents=True, exist_ok=True)
        DIGEST.write_text("\n".join(lines) + "\n", encoding="utf-8")

    write_digest()


drought_alert_digest()
