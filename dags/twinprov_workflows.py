"""Airflow DAG file: one DAG per workflow spec in ``workflows/`` (twinprov's DAG factory).

A broken spec is reported as an import error of this file, naming the spec and every mistake;
the other workflows still load.
"""

from __future__ import annotations

import os
from pathlib import Path

from twinprov.dags.factory import workflow_dags

_folder = Path(os.environ.get("TWINPROV_WORKFLOWS_DIR", Path(__file__).with_name("workflows")))
globals().update(workflow_dags(_folder))

from twinprov.dags.cwl_factory import cwl_dags  # noqa: E402

globals().update(cwl_dags(_folder))
