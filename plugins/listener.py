"""Task listener: copies primitives out of Airflow's task instance and appends them to the ledger.

It never raises into Airflow (a raising hook would also silence other listeners), and it persists
the event (ledger, or the spool folder if the ledger is down) before anything else can fail.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import time
from types import SimpleNamespace
from typing import Any

from airflow.listeners import hookimpl

from twinprov.airflow import dag_capture, openlineage_ids
from twinprov.airflow.airflow_compat import dag_run_of, template_context
from twinprov.provenance.assets import HAND_WRITTEN_ROLE
from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import TaskEvent, record_event

log = logging.getLogger(__name__)

DISABLE_ENV = "TWINPROV_CAPTURE"  # set to "off" to switch capture off (used by the benchmark)
capture_stats = {"events": 0, "seconds": 0.0, "publish_seconds": 0.0}
"""Events captured by this process and the time spent on them (read by bench/capture_overhead)."""


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else (str(value) if value else None)


def _airflow_version() -> str:
    from airflow import __version__

    return __version__


def _run_info(ti: Any, task: Any, settings: Settings) -> dict[str, Any]:
    info: dict[str, Any] = {"airflow_version": _airflow_version()}
    dr = dag_run_of(ti)
    if dr is not None:
        user = dr.triggering_user_name
        info.update(
            run_type=str(getattr(dr.run_type, "value", dr.run_type)),
            run_start=_iso(dr.start_date),
            logical_date=_iso(dr.logical_date),
            triggered_via=user,
        )
        # `dag.test()` (the `twinprov run` CLI) names no user: the OS user of the process did it
        info["triggering_user"] = getpass.getuser() if user in (None, "dag_test") else user
        consumed = dag_capture.consumed_assets(dr)
        if consumed:  # started by asset events (data-aware scheduling)
            info["consumed_assets"] = consumed
    try:
        params = template_context(ti).get("params") or {}
        info["params"] = {k: params[k] for k in params}
    except Exception as e:  # the context is a convenience, never a reason to lose the event
        info["params_error"] = str(e)
    else:
        from twinprov.provenance.spec import RERUN_PARAM

        if RERUN_PARAM in info["params"] and info["params"][RERUN_PARAM] is None:
            info["params"][RERUN_PARAM] = ""  # the form's empty (null) field: not a rerun
        if info["params"].get(RERUN_PARAM):
            from twinprov.app.rerun import RerunRefused, effective_params

            try:  # a rerun uses the original's values: record those
                info["params"] = effective_params(settings, ti.dag_id, info["params"])
            except RerunRefused as e:  # another workflow's run: record nothing of it, not even
                info["params"][RERUN_PARAM] = ""  # its name (the steps fail with the refusal)
                info["params_error"] = str(e)
            except Exception as e:
                info["params_error"] = f"rerun_of: {e}"
    spec_path = getattr(task, "spec_path", None)
    if spec_path:
        from twinprov.provenance.spec import load_spec, spec_digest

        info["spec_path"] = spec_path
        info["spec_sha256"] = spec_digest(spec_path)
        info["workflow_version"] = load_spec(spec_path).version
    cwl_path = getattr(task, "cwl_path", None)
    if cwl_path:  # a CWL document's DAG (dags/cwl_factory.py)
        from twinprov.provenance.spec import spec_digest

        info["cwl_path"] = cwl_path
        info["spec_sha256"] = spec_digest(str(cwl_path).split("#", 1)[0])
        info["workflow_language"] = "cwl"
    return info


def _snapshot_spec(ti: Any, run_info: dict[str, Any], settings: Settings) -> None:
    """Keep the exact spec bytes the run started from (the spec file may be edited later)."""
    from twinprov.provenance.workspace import snapshot_spec

    if run_info.get("spec_path"):
        snapshot_spec(
            settings.runs_dir,
            ti.dag_id,
            ti.run_id,
            run_info["spec_path"],
            run_info["spec_sha256"],
        )
    elif run_info.get("cwl_path"):  # the CWL document and the tool documents it runs
        from twinprov.provenance.workspace import snapshot_cwl

        snapshot_cwl(
            settings.runs_dir, ti.dag_id, ti.run_id, run_info["cwl_path"], run_info["spec_sha256"]
        )


_RUNS_RECORDED: set[tuple[str, str, str]] = set()
"""Runs whose facts (``run_info``) this process already put in the ledger: the ledger keeps a
run's first facts only, so its later events skip gathering them again."""


def _event(
    ti: Any, state: str, settings: Settings, error: Any = None
) -> tuple[TaskEvent, dict[str, Any] | None] | None:
    task = getattr(ti, "task", None)
    role = getattr(task, "twinprov_role", None)
    if role is None:
        if not dag_capture.captured(task, settings):
            return None  # not a twinprov workflow, nor a DAG captured under `capture`
        role = HAND_WRITTEN_ROLE
    payload: dict[str, Any] = {
        "role": role,
        "operator": type(task).__name__,
        "hostname": getattr(ti, "hostname", None) or socket.gethostname(),
        "pid": os.getpid(),
        "max_tries": getattr(ti, "max_tries", None),
    }
    if state == "running":
        payload["start_date"] = _iso(getattr(ti, "start_date", None))
    else:
        payload["end_date"] = _iso(getattr(ti, "end_date", None)) or _iso_now()
    if error is not None:
        payload["error"] = str(error)[:4000]
    try:
        if role == "step":
            payload.update(task.twinprov_static)
            if state != "running":
                payload["manifest"] = getattr(task, "twinprov_manifest", None)
        if state != "running":
            # facts learnt while running: pod, image digest, HPC job, validation verdict…
            payload.update(getattr(task, "twinprov_facts", None) or {})
        if role == HAND_WRITTEN_ROLE:
            payload.update(dag_capture.task_payload(task, state))
            if state != "running":
                payload.update(dag_capture.asset_payload(task, template_context(ti)))
        run_info: dict[str, Any] | None = None  # none if the ledger has the run's facts
        if (settings.ledger_url, ti.dag_id, ti.run_id) not in _RUNS_RECORDED:
            run_info = _run_info(ti, task, settings)
        if state == "running" and (ol_ids := openlineage_ids.provider_run_ids(ti)):
            payload["openlineage"] = ol_ids  # Airflow's OpenLineage provider's run ids
        if run_info is not None and role == HAND_WRITTEN_ROLE:
            dr = dag_run_of(ti)
            run_info.update(dag_capture.dag_run_info(ti, task, settings, getattr(dr, "conf", None)))
    except Exception as e:
        payload["capture_error"] = f"{type(e).__name__}: {e}"
        run_info = {}
    ev = TaskEvent(
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        map_index=int(
            getattr(ti, "map_index", -1) if getattr(ti, "map_index", None) is not None else -1
        ),
        try_number=int(getattr(ti, "try_number", 0) or 0),
        state=state,
        payload=payload,
    )
    return ev, run_info


def _iso_now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()


def _capture(ti: Any, state: str, error: Any = None) -> None:
    if os.environ.get(DISABLE_ENV, "").lower() == "off":
        return
    t0 = time.perf_counter()
    try:
        if not dag_capture.may_capture(getattr(ti, "task", None)):
            return  # neither a twinprov workflow nor a DAG `capture` could ask for
        settings = Settings.load()  # airflow.cfg is parsed once per version of the file
        built = _event(ti, state, settings, error)
        if built is None:
            return
        ev, run_info = built
        info = run_info or {}
        snapshot_of = info.get("spec_path") or str(info.get("cwl_path") or "")
        if run_info is not None and snapshot_of:
            from twinprov.provenance.workspace import spec_snapshot_path

            run_info["spec_snapshot"] = str(
                spec_snapshot_path(
                    settings.runs_dir, ev.dag_id, ev.run_id, snapshot_of.split("#", 1)[0]
                )
            )
        where = record_event(settings.ledger_url, settings.spool_dir, ev, run_info)
        if run_info is not None and state == "running":
            _snapshot_spec(ti, run_info, settings)
        if run_info and where == "ledger":
            if len(_RUNS_RECORDED) > 1000:
                _RUNS_RECORDED.clear()
            _RUNS_RECORDED.add((settings.ledger_url, ev.dag_id, ev.run_id))
    except Exception:
        log.warning(
            "twinprov: could not capture %s of %s",
            state,
            getattr(ti, "task_id", "?"),
            exc_info=True,
        )
    finally:
        capture_stats["events"] += 1
        capture_stats["seconds"] += time.perf_counter() - t0


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    _capture(task_instance, "running")


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    _capture(task_instance, "success")


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    # a task that ran and then skipped itself (a CWL step whose `when` is false)
    _capture(task_instance, "skipped")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any = None) -> None:
    _capture(task_instance, "failed", error)


def _dag_run_ended(dag_run: Any) -> None:
    if os.environ.get(DISABLE_ENV, "").lower() == "off":
        return
    t0 = time.perf_counter()
    try:
        dag = getattr(dag_run, "dag", None)  # set in the scheduler and under dag.test()
        spec = dag is not None and dag_capture.is_spec_dag(dag)  # published by its own task
        if dag is not None and not spec and not dag_capture.may_capture(SimpleNamespace(dag=dag)):
            return  # an untagged DAG under `capture = tagged`: not even a ledger read
        # published in the background: the scheduler's loop does not wait for it
        dag_capture.after_run(str(dag_run.dag_id), str(dag_run.run_id), publish=not spec)
    except Exception:
        log.warning(
            "twinprov: could not publish %s/%s (`twinprov publish --pending` finishes it)",
            getattr(dag_run, "dag_id", "?"),
            getattr(dag_run, "run_id", "?"),
            exc_info=True,
        )
    finally:
        capture_stats["publish_seconds"] += time.perf_counter() - t0


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    _dag_run_ended(dag_run)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    _dag_run_ended(dag_run)


# Modules the capture and the publish task need, imported when the plugin is loaded. Airflow
# loads plugins in the scheduler before its LocalExecutor forks the workers, and every task
# process is a fork of a worker: imported here, they are imported once per scheduler instead of
# once per task (import time is CPU that the task processes of a busy host compete for).
_PRELOAD_COMMON = (  # twinprov's own core: every task of a twinprov DAG imports it (operators)
    "twinprov.provenance.environment",
    "twinprov.app.publish",
    "twinprov.app.rerun",
    "twinprov.provenance.spec",
    "twinprov.provenance.workspace",
)
_PRELOAD_CAPTURE = (  # only the capture and the publication use these
    "prov.serializers.provjson",
    "prov.serializers.provrdf",
    "rdflib.plugins.serializers.turtle",
    "twinprov.provenance.remote_store",
    "twinprov.ro_crates.assemble",
    "twinprov.ro_crates.crate",
    "twinprov.ro_crates.stac",
)


_NO_TASKS_HERE = ("api-server", "api_server", "dag-processor", "triggerer", "webserver")
"""Airflow components that load plugins but never run task processes: nothing to preload."""


def _preload() -> None:
    import importlib
    import sys

    if any(arg in _NO_TASKS_HERE for arg in sys.argv[1:3]):
        return
    capture = os.environ.get(DISABLE_ENV, "").lower() != "off"
    for name in _PRELOAD_COMMON + (_PRELOAD_CAPTURE if capture else ()):
        try:
            importlib.import_module(name)
        except Exception as e:  # a missing extra only costs the import later, where it fails
            log.debug("twinprov: preloading %s failed: %s", name, e)
    if capture:
        try:  # computed (or read from their cache) once; task processes inherit them
            from twinprov.provenance.environment import python_environment
            from twinprov.provenance.ledger import warm_up

            warm_up(Settings.load().ledger_url)
            python_environment()
            from twinprov.ro_crates.crate import preview_template

            preview_template()
        except Exception as e:
            log.debug("twinprov: settings or python environment not read: %s", e)


_preload()
