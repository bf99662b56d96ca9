"""MLflow run context provider: tags MLflow runs started inside a twinprov step.

Registered through MLflow's ``mlflow.run_context_provider`` entry point, so any
``mlflow.start_run()`` in a step's own code carries the step's identity. Kept apart from
:mod:`twinprov.ro_crates.mlflow_links` so that MLflow loading its plugins never imports half a
module.
"""

from __future__ import annotations

__all__ = ["IDENTITY_ENV", "TwinprovRunContext"]

import os

from mlflow.tracking.context.abstract_context import RunContextProvider

IDENTITY_ENV = {
    "TWINPROV_DAG_ID": "twinprov.dag_id",
    "TWINPROV_RUN_ID": "twinprov.run_id",
    "TWINPROV_TASK_ID": "twinprov.task_id",
    "TWINPROV_TRY_NUMBER": "twinprov.try_number",
    "TWINPROV_RUN_IRI": "twinprov.run_iri",
}


class TwinprovRunContext(RunContextProvider):
    """Tags MLflow runs started inside a twinprov step with the step's identity."""

    def in_context(self) -> bool:
        return "TWINPROV_RUN_IRI" in os.environ

    def tags(self) -> dict[str, str]:
        return {tag: os.environ[env] for env, tag in IDENTITY_ENV.items() if env in os.environ}
