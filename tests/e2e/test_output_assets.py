"""Spec outputs as Airflow Assets: a real ``dag.test()`` run emits one asset event per output,
from the task that vouches for it (the validation task of a checked output, else the step),
whose ``extra`` carries the sha256, the PROV run IRI, the crate and the validation verdict; a
hand-written DAG scheduled on one of them runs after it (its run created by the scheduler's own
code from the queued asset event) and its provenance meets the output by checksum."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import add_dag_file, asset_events
from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger

SPEC = """
name: assets_wf
steps:
  - id: produce
    command:
      - python
      - -c
      - "open('t.csv','w').write('x\\\\n1\\\\n2\\\\n'); open('n.txt','w').write('2')"
    outputs:
      - name: table
        path: t.csv
        media_type: text/csv
        validation:
          on_failure: fail
          expectations:
            - {type: expect_column_values_to_be_between,
               kwargs: {column: x, min_value: 0, max_value: 10}}
      - {name: count, path: n.txt, media_type: text/plain}
"""


B_DAG = """
from pathlib import Path

from airflow.sdk import Asset, dag, task

COUNT = Asset(uri="twinprov://assets_wf/produce/count", group="twinprov")
OUT = Path(%(out)r)


@dag(dag_id="assets_b", schedule=[COUNT], tags=["twinprov"])
def assets_b():
    @task(outlets=[Asset(uri=OUT.as_uri())])
    def double(triggering_asset_events=None):
        (event,) = triggering_asset_events[COUNT]
        n = int(Path(event.extra["path"]).read_text())
        OUT.write_text(str(2 * n))

    double()


assets_b()
"""


def _run_asset_triggered(dag_id: str) -> Any:
    """Create the DAG's asset-triggered run as the scheduler does (its own code, from the asset
    events queued for the DAG), then run its tasks in this process as ``dag.test()`` does; no
    scheduler process (its loop, executor and API server) runs here."""
    from airflow import settings
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    from twinprov.dags.runner import find_dag

    dag = find_dag(dag_id)
    session = settings.Session()
    runner = SchedulerJobRunner(job=Job())
    runner._create_dag_runs_asset_triggered(
        dag_models=[session.get(DagModel, dag_id)], session=session
    )
    session.commit()
    dr = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)).one()
    dr.dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    dr.state = DagRunState.RUNNING
    session.commit()
    while dr.state == DagRunState.RUNNING:
        session.expire_all()
        schedulable, _ = dr.update_state(session=session)
        for ti in schedulable:
            ti.try_number += 1
            ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        for ti in dr.get_task_instances(session=session):
            if ti.state == TaskInstanceState.SCHEDULED:
                _run_task(ti=ti, task=dag.task_dict[ti.task_id])
    return dr


def test_outputs_are_assets_whose_events_carry_the_provenance(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path, dags_folder: Path, tmp_path: Path
) -> None:
    from twinprov.dags.factory import build_dag
    from twinprov.dags.outputs import output_uri
    from twinprov.dags.runner import run_workflow

    spec = workflows_dir / "assets_wf.yaml"
    spec.write_text(SPEC)
    doubled = tmp_path / "doubled.txt"
    add_dag_file(dags_folder, "assets_b.py", B_DAG % {"out": str(doubled)})
    dag = build_dag(spec)
    assert [a.uri for a in dag.get_task("produce").outlets] == [
        output_uri("assets_wf", "produce", "count")
    ]
    assert [a.uri for a in dag.get_task("validate_produce_table").outlets] == [
        output_uri("assets_wf", "produce", "table")
    ]
    outcome = run_workflow(str(spec), {})
    assert outcome.state == "success"
    rec = Ledger(Settings.load().ledger_url).run("assets_wf", outcome.run_id)
    assert rec is not None
    manifest = next(
        e.payload["manifest"]
        for e in Ledger(Settings.load().ledger_url).events("assets_wf", outcome.run_id)
        if e.task_id == "produce" and e.payload.get("manifest")
    )
    sha = {o["name"]: o["sha256"] for o in manifest["outputs"]}
    events = {uri: extras[-1] for uri, extras in asset_events(outcome.run_id).items()}
    table = events[output_uri("assets_wf", "produce", "table")]
    count = events[output_uri("assets_wf", "produce", "count")]
    assert table["sha256"] == sha["table"] and table["validation"] == "passed"
    assert count["sha256"] == sha["count"] and count["validation"] == "not checked"
    assert table["run"] == rec.publication["graph"]
    assert table["crate"] == rec.publication["crate"]

    # workflow B, scheduled on A's output asset, runs after A and used A's very output entity
    from twinprov.app.summary import RUNS_USING_QUERY
    from twinprov.provenance.store import EmbeddedStore

    b = _run_asset_triggered("assets_b")
    assert (
        str(b.run_type) in ("asset_triggered", "DagRunType.ASSET_TRIGGERED")
        and b.state == "success"
    )
    assert doubled.read_text() == "4"
    settings = Settings.load()
    b_rec = Ledger(settings.ledger_url).run("assets_b", b.run_id)
    assert b_rec is not None and b_rec.stored_digest  # published from the DAG-run listener
    (consumed,) = b_rec.info["consumed_assets"]
    assert (
        consumed["source_run_id"] == outcome.run_id and consumed["extra"]["sha256"] == sha["count"]
    )
    with EmbeddedStore(settings.store_path).open() as store:
        rows = {
            (r["dag"].value, r["run"].value)
            for r in store.query(
                RUNS_USING_QUERY % {"entity": f"urn:twinprov:data/sha256-{sha['count']}"}
            )
        }
    assert rows == {("assets_b", b.run_id)}  # not A: it made the file, it did not use it
