"""Every private Airflow internal twinprov relies on, in one place.

Each has no public equivalent in Airflow 3.3 that is as cheap, so it is read here, with the public
API as the fallback; ``tests/airflow/test_airflow_compat.py`` pins them, so an Airflow upgrade that
removes or renames one fails that test by name instead of silently degrading the capture.

* ``RuntimeTaskInstance._cached_template_context`` — the task's template context, built by the task
  runner before the task starts. ``get_template_context()`` returns the same object but first
  validates every param against its schema again (~4 ms per listener event).
* ``RuntimeTaskInstance._ti_context_from_server`` — the DAG run as the API server sent it
  (triggering user, run type, dates); public only through the template context above.
* ``airflow.utils.db._get_current_revision`` — the metadata DB's Alembic revision, to migrate the
  embedded default's SQLite DB only when needed (``upgradedb`` on every ``twinprov run`` costs
  seconds; ``check_migrations`` waits and raises instead of answering).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PINNED", "current_db_revision", "dag_run_of", "template_context"]

PINNED = {
    "airflow.sdk.execution_time.task_runner.RuntimeTaskInstance": (
        "_cached_template_context",
        "_ti_context_from_server",
    ),
    "airflow.utils.db": ("_get_current_revision",),
}
"""The private names used here, by the object that holds them (checked by the tests)."""


def template_context(ti: Any) -> Any:
    """The task's template context (the task runner's cached one when it has it)."""
    cached = getattr(ti, "_cached_template_context", None)
    return cached if isinstance(cached, dict) else ti.get_template_context()


def dag_run_of(ti: Any) -> Any:
    """The task's DAG run as the API server sent it, or None (outside a task runner)."""
    ctx = getattr(ti, "_ti_context_from_server", None)
    return getattr(ctx, "dag_run", None)


def current_db_revision(session: Any) -> str | None:
    """The Alembic revision of Airflow's metadata DB, or None if it has none yet."""
    from airflow.utils import db

    rev = db._get_current_revision(session)
    return str(rev) if rev else None
