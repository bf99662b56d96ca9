"""Airflow DAG file: one DAG per workflow spec and per CWL document in ``workflows/``.

A broken spec is reported as an import error of this file, naming the spec and every mistake;
the other workflows still load.
"""

from __future__ import annotations

import os
from pathlib import Path

from twinprov.dags.cwl_factory import DOCUMENT_ENV, cwl_dags

_folder = Path(os.environ.get("TWINPROV_WORKFLOWS_DIR", Path(__file__).with_name("workflows")))
if not os.environ.get(DOCUMENT_ENV):
    # ``twinprov cwl-runner`` sets it: its one CWL DAG is all that process needs (the specs'
    # DAGs, with the Kubernetes provider they import, cost it 0.6 s per call)
    from twinprov.dags.factory import workflow_dags

    globals().update(workflow_dags(_folder))
globals().update(cwl_dags(_folder))
