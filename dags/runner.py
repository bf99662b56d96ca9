"""Drive a workflow through Airflow from the command line (``twinprov run`` / ``demo``).

The embedded default: Airflow's home under ``TWINPROV_HOME/airflow`` (unless ``AIRFLOW_HOME`` is
set), SQLite metadata DB migrated on first use, this package's ``dags/`` as the DAGs folder,
and the run driven by ``dag.test()`` in this process (the listener fires in it).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinprov.provenance.config import airflow_home, twinprov_home

DAGS_DIR = Path(__file__).resolve().parent


def prepare_environment() -> None:
    """Point Airflow at the embedded default; must run before ``airflow`` is imported."""
    home = twinprov_home()
    os.environ["TWINPROV_HOME"] = str(home)
    os.environ.setdefault("AIRFLOW_HOME", str(airflow_home()))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS_DIR))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
    # dag.test() runs every task in this process, which holds Airflow's SQLite DB open: the
    # OpenLineage provider (if installed) must not fork per task event, or the forks share
    # and corrupt that DB ("database disk image is malformed"); it sends from a thread instead
    os.environ.setdefault("AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD", "True")
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)


def ensure_database() -> None:
    """Create or migrate Airflow's metadata DB when it is not at the current revision."""
    from airflow import settings
    from airflow.utils import db

    from twinprov.airflow.airflow_compat import current_db_revision

    settings.configure_orm()
    with settings.Session() as session:
        try:
            current = current_db_revision(session)
        except Exception:
            current = None
    if current is None:
        logging.getLogger("alembic").setLevel(logging.WARNING)
        db.upgradedb()
        settings.configure_orm()


def mask_console_logs() -> None:
    """Make Airflow's secrets masker apply to the console logging of this process.

    ``dag.test()`` runs each task in this process, logging through the console configuration
    Airflow's core set up, which does not redact: in a deployment the task's supervisor redacts
    (and the SDK's own logging configuration adds the ``mask_logs`` processor), and neither is
    there. So a secret registered with ``airflow.sdk.log.mask_secret`` (a step's ``secrets:``,
    a connection's password) reached the console in clear. This adds that processor before the
    renderer of structlog's chain (in place: loggers already built share the list) and of the
    stdlib handlers' ``ProcessorFormatter``. Idempotent.
    """
    import logging

    import structlog
    from airflow.sdk.log import mask_logs

    chains: list[Any] = [structlog.get_config()["processors"]]
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if isinstance(formatter, structlog.stdlib.ProcessorFormatter):
            if not isinstance(formatter.processors, list):
                formatter.processors = list(formatter.processors)
            chains.append(formatter.processors)
    for chain in chains:
        if isinstance(chain, list) and chain and mask_logs not in chain:
            chain.insert(len(chain) - 1, mask_logs)


@dataclass(frozen=True)
class RunOutcome:
    """What a driven run ended as."""

    dag_id: str
    run_id: str
    state: str


def workflow_path(name: str) -> Path:
    """The spec file of a workflow named by name (in the workflows folder) or by path."""
    path = Path(name)
    if path.suffix:
        return path
    folder = Path(os.environ.get("TWINPROV_WORKFLOWS_DIR", DAGS_DIR / "workflows"))
    return folder / f"{name}.yaml"


def find_dag(dag_id: str) -> Any:
    """A DAG of Airflow's configured ``dags_folder`` by id (hand-written DAGs included), or
    ``None``. Only the files that mention the id are parsed."""
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    folder = Path(conf.get("core", "dags_folder")).expanduser()
    needle = dag_id.encode()
    for path in sorted(folder.rglob("*.py")):
        if "__pycache__" in path.parts or any(p.startswith(".") for p in path.parts):
            continue
        try:
            if needle not in path.read_bytes():
                continue
        except OSError:
            continue
        bag = DagBag(str(path), bundle_path=folder)
        dag = bag.dags.get(dag_id)
        if dag is not None:
            return dag
    return None


def load_workflow_dag(name: str, backend: str | None = None, reproduce: bool = False) -> Any:
    """The DAG of a workflow by name (or spec path), or any DAG of the DAGs folder by id."""
    from twinprov.dags.factory import build_dag

    path = workflow_path(name)
    if not Path(name).suffix and not path.is_file() and not reproduce:
        dag = find_dag(name)  # not a spec: any DAG of Airflow's DAGs folder
        if dag is not None:
            return dag
    if path.suffix == ".cwl" and path.is_file():  # a CWL document (a rerun's, from its crate)
        from twinprov.dags.cwl_factory import DOCUMENT_ENV, build_cwl_dag

        os.environ[DOCUMENT_ENV] = str(path.resolve())  # dag.test() parses only this one
        return build_cwl_dag(path.resolve())
    if Path(name).suffix:
        # dag.test() parses the DAGs folder: let the DAG file see this spec's folder
        os.environ["TWINPROV_WORKFLOWS_DIR"] = str(path.resolve().parent)
    if not path.is_file():
        from twinprov.provenance.errors import RunNotFoundError

        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise RunNotFoundError(
            f"no workflow or DAG '{name}' (workflows: {', '.join(known) or 'none'})"
        )
    return build_dag(path, backend, reproduce=reproduce)


def run_workflow(
    name: str,
    params: dict[str, Any],
    backend: str | None = None,
    *,
    reproduce: bool = False,
    wait: bool = True,
) -> RunOutcome:
    """Run a workflow once through ``dag.test()`` and return how it ended.

    ``reproduce`` runs the workflow's scheduled-rerun DAG (``<name>__reproduce``) instead.
    ``wait``: return once the run is published (a hand-written DAG's run is published in the
    background when it ends); else as soon as it ended.
    """
    prepare_environment()
    ensure_database()
    dag = load_workflow_dag(name, backend, reproduce)
    mask_console_logs()  # the tasks run in this process: no supervisor redacts their logs
    dr = dag.test(run_conf=params or None)
    if wait:  # the DAG-run listener publishes in the background
        from twinprov.airflow.dag_capture import wait_published

        wait_published()
    state = str(getattr(dr.state, "value", dr.state))
    return RunOutcome(dag.dag_id, dr.run_id, state)
