"""The run ids Airflow's OpenLineage provider gives a task try and its DAG run, when the provider
is installed and enabled: twinprov's OpenLineage events reuse them, so a lineage backend that
receives both sources merges them on the same runs instead of showing twins.

Computed in the task process with the provider's own functions (its adapter's
``build_task_instance_run_id`` / ``build_dag_run_id``, fed as its listener feeds them) and
recorded in the task event; the publication (which imports no Airflow) only reads them.
"""

from __future__ import annotations

import logging
from typing import Any

from twinprov.airflow.airflow_compat import dag_run_of

log = logging.getLogger(__name__)


def provider_run_ids(ti: Any) -> dict[str, str] | None:
    """``{namespace, task_run_id, dag_run_id}`` as the provider builds them for this try;
    ``None`` without the provider, when it is disabled, or without a DAG run to read. Never
    raises: without them, the events get twinprov's own run ids."""
    try:
        return _provider_run_ids(ti)
    except Exception as e:
        log.warning("twinprov: the OpenLineage provider's run ids not read: %s", e)
        return None


def _provider_run_ids(ti: Any) -> dict[str, str] | None:
    try:
        from airflow.providers.openlineage import conf
        from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter
    except ImportError:
        return None
    if conf.is_disabled():
        return None
    dr = dag_run_of(ti)
    if dr is None:
        return None
    date = getattr(dr, "logical_date", None) or getattr(dr, "run_after", None)
    if date is None:
        return None
    return {
        "namespace": conf.namespace(),
        "task_run_id": str(
            OpenLineageAdapter.build_task_instance_run_id(
                dag_id=ti.dag_id,
                task_id=ti.task_id,
                try_number=ti.try_number,
                logical_date=date,
                map_index=ti.map_index,
            )
        ),
        "dag_run_id": str(
            OpenLineageAdapter.build_dag_run_id(
                dag_id=ti.dag_id,
                logical_date=date,
                clear_number=int(getattr(dr, "clear_number", 0) or 0),
            )
        ),
    }
