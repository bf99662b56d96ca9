"""End to end through real Airflow ``dag.test()``: failed steps, retries, broken specs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pyoxigraph as ox

from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger
from twinprov.provenance.store import EmbeddedStore

FAILING = """
name: failing_wf
steps:
  - id: first
    command: [python, -c, "open('a.txt','w').write('hello')"]
    outputs: [{name: a, path: a.txt, media_type: text/plain}]
  - id: second
    command: [python, -c, "import sys; print('about to fail'); sys.exit(3)"]
    inputs: [{name: a, from: first.a}]
  - id: third
    needs: [second]
    command: [python, -c, "print('never')"]
"""

FLAKY = """
name: flaky_wf
defaults: {retries: 1, retry_delay_seconds: 0}
steps:
  - id: flaky
    command: [python, -c, "${workflow_dir}/flaky.py"]
    outputs: [{name: out, path: out.txt, media_type: text/plain}]
"""

FLAKY_PY = """
import os, sys
if not os.path.exists("tried"):
    open("tried", "w").write("1")
    sys.exit("first try fails on purpose")
open("out.txt", "w").write("second try works")
"""


def _select(sparql: str) -> list[dict[str, str]]:
    with EmbeddedStore(Settings.load().store_path).open() as store:
        res = store.query(sparql)
        names = [v.value for v in res.variables]
        return [{n: sol[n].value for n in names if sol[n] is not None} for sol in res]


def test_failed_step_still_publishes_a_graph_with_the_failure(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path
) -> None:
    from twinprov.dags.runner import run_workflow

    spec = workflows_dir / "failing.yaml"
    spec.write_text(FAILING)
    outcome = run_workflow(str(spec), {})
    assert outcome.state == "failed"  # the Airflow DAG run itself failed
    rec = Ledger(Settings.load().ledger_url).run("failing_wf", outcome.run_id)
    assert rec is not None and rec.state == "failed" and rec.published_digest
    rows = _select(f"""
        PREFIX tp: <urn:twinprov:vocab#>
        SELECT ?task ?state ?code ?error WHERE {{ GRAPH <{rec.publication["graph"]}> {{
          ?a a tp:TaskTry ; tp:taskId ?task ; tp:state ?state .
          OPTIONAL {{ ?a tp:exitCode ?code }} OPTIONAL {{ ?a tp:error ?error }} }} }}
        ORDER BY ?task""")
    by_task = {r["task"]: r for r in rows}
    assert by_task["first"]["state"] == "success"
    assert by_task["second"]["state"] == "failed" and by_task["second"]["code"] == "3"
    assert "step second failed: exit code 3" in by_task["second"]["error"]
    assert "third" not in by_task  # never ran: no activity invented for it
    run_state = _select(f"""
        PREFIX tp: <urn:twinprov:vocab#>
        SELECT ?s WHERE {{ <{rec.publication["graph"]}> tp:state ?s }}""")
    assert run_state == [{"s": "failed"}]


def test_retry_gives_one_activity_per_try(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path
) -> None:
    from twinprov.dags.runner import run_workflow

    (workflows_dir / "flaky.yaml").write_text(FLAKY.replace("-c, ", ""))
    (workflows_dir / "flaky.py").write_text(FLAKY_PY)
    outcome = run_workflow(str(workflows_dir / "flaky.yaml"), {})
    assert outcome.state == "success"
    graph = Ledger(Settings.load().ledger_url).run("flaky_wf", outcome.run_id).publication["graph"]
    rows = _select(f"""
        PREFIX tp: <urn:twinprov:vocab#>
        SELECT ?try ?state ?prev WHERE {{ GRAPH <{graph}> {{
          ?a a tp:TaskTry ; tp:tryNumber ?try ; tp:state ?state .
          OPTIONAL {{ ?a tp:retryOf ?prev }} }} }} ORDER BY ?try""")
    assert [(r["try"], r["state"]) for r in rows] == [("1", "failed"), ("2", "success")]
    assert rows[1]["prev"].endswith("/task/flaky/-1/1")
    with EmbeddedStore(Settings.load().store_path).open() as store:
        n = store.graph_size(graph)
    assert n > 0
    assert ox  # the store really is pyoxigraph


def test_broken_spec_is_an_import_error_and_others_still_load(
    airflow_db: None, workflows_dir: Path
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from twinprov.dags.factory import DAG_FILE

    (workflows_dir / "good.yaml").write_text(FAILING)
    (workflows_dir / "broken.yaml").write_text(
        textwrap.dedent("""
        name: broken_wf
        steps:
          - id: a
            command: [python]
            needs: [a]
            colour: red
    """)
    )
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert "failing_wf" in bag.dags
    assert "broken_wf" not in bag.dags
    (message,) = bag.import_errors.values()
    assert "broken.yaml" in message
    assert "steps[0].colour: unknown field" in message
