"""The private Airflow internals twinprov uses (``twinprov.airflow.airflow_compat``) still exist
with the shape the capture relies on. Fails by name on an Airflow upgrade that changes one."""

from __future__ import annotations

import importlib
import inspect

import pytest

from twinprov.airflow.airflow_compat import PINNED, current_db_revision, dag_run_of


def _holder(path: str) -> object:
    module, _, attr = path.rpartition(".")
    try:
        return importlib.import_module(path)
    except ImportError:
        return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize(("holder", "name"), [(h, n) for h, ns in PINNED.items() for n in ns])
def test_pinned_internal_exists(holder: str, name: str) -> None:
    obj = _holder(holder)
    private = getattr(obj, "__private_attributes__", {})  # pydantic models keep them here
    assert name in private or hasattr(obj, name), (
        f"Airflow changed: {holder}.{name} is gone; update twinprov/airflow/airflow_compat.py"
    )


def test_template_context_cache_is_what_the_task_runner_fills() -> None:
    from airflow.sdk.execution_time import task_runner

    source = inspect.getsource(task_runner.RuntimeTaskInstance.get_template_context)
    assert "self._cached_template_context = {" in source, "the task runner no longer caches"


def test_dag_run_of_reads_the_server_context() -> None:
    class Ctx:
        dag_run = "the run"

    class TI:
        _ti_context_from_server = Ctx()

    assert dag_run_of(TI()) == "the run"
    assert dag_run_of(object()) is None


@pytest.mark.usefixtures("airflow_db")
def test_current_db_revision_of_the_migrated_db() -> None:
    from airflow import settings

    with settings.Session() as session:
        rev = current_db_revision(session)
    assert rev and len(rev) >= 8, rev
