"""Spec outputs as Airflow Assets: a real ``dag.test()`` run emits one asset event per output,
from the task that vouches for it (the validation task of a checked output, else the step),
whose ``extra`` carries the sha256, the PROV run IRI, the crate and the validation verdict."""

from __future__ import annotations

from pathlib import Path

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


def test_outputs_are_assets_whose_events_carry_the_provenance(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path
) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from twinprov.dags.factory import build_dag
    from twinprov.dags.outputs import output_uri
    from twinprov.dags.runner import run_workflow

    spec = workflows_dir / "assets_wf.yaml"
    spec.write_text(SPEC)
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
    with create_session() as session:
        events = {
            uri: extra
            for uri, extra in session.execute(
                select(AssetModel.uri, AssetEvent.extra)
                .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
                .where(AssetEvent.source_run_id == outcome.run_id)
            )
        }
    table = events[output_uri("assets_wf", "produce", "table")]
    count = events[output_uri("assets_wf", "produce", "count")]
    assert table["sha256"] == sha["table"] and table["validation"] == "passed"
    assert count["sha256"] == sha["count"] and count["validation"] == "not checked"
    assert table["run"] == rec.publication["graph"]
    assert table["crate"] == rec.publication["crate"]
