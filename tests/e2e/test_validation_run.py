"""End to end: Great Expectations checks inside real Airflow runs (``dag.test()``), verdicts in
the ledger, the PROV graph (asserted through SPARQL) and the HTML report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger
from twinprov.provenance.store import EmbeddedStore

TP = [sys.executable, "-m", "twinprov.cli"]

TABLE_SPEC = """
name: {name}
steps:
  - id: produce
    command: [python, "${{workflow_dir}}/produce.py"]
    outputs:
      - name: table
        path: t.csv
        media_type: text/csv
        validation:
          on_failure: {policy}
          expectations:
            - {{type: expect_column_values_to_be_between,
               kwargs: {{column: x, min_value: 0, max_value: 10}}}}
  - id: consume
    command: [python, -c, "print(open('t.csv').read())"]
    inputs: [{{name: table, from: produce.table}}]
"""

PRODUCE = """
import subprocess, sys
open("t.csv", "w").write("x\\n1\\n2\\n{value}\\n")
if {tamper}:
    # Change the output behind the step's back: a grandchild that outlives the command,
    # so the wrapper has hashed the output already; it keeps the log pipe open, so the
    # task (and the validation after it) only goes on once the file has been changed.
    subprocess.Popen(
        [sys.executable, "-c",
         "import time; time.sleep(0.5); open('t.csv', 'a').write('5\\\\n')"],
        start_new_session=True)
"""


def _select(sparql: str) -> list[dict[str, str]]:
    with EmbeddedStore(Settings.load().store_path).open() as store:
        res = store.query(sparql)
        names = [v.value for v in res.variables]
        return [{n: sol[n].value for n in names if sol[n] is not None} for sol in res]


def _run(folder: Path, name: str, policy: str, value: int, tamper: bool = False) -> tuple:
    from twinprov.dags.runner import run_workflow

    (folder / f"{name}.yaml").write_text(TABLE_SPEC.format(name=name, policy=policy))
    (folder / "produce.py").write_text(PRODUCE.format(value=value, tamper=tamper))
    outcome = run_workflow(str(folder / f"{name}.yaml"), {})
    rec = Ledger(Settings.load().ledger_url).run(name, outcome.run_id)
    return outcome, rec


def _verdicts(graph: str) -> list[dict[str, str]]:
    return _select(f"""
        PREFIX tp: <urn:twinprov:vocab#>
        PREFIX prov: <http://www.w3.org/ns/prov#>
        SELECT ?verdict ?failed ?error ?sha WHERE {{ GRAPH <{graph}> {{
          ?v a tp:Validation ; tp:verdict ?verdict ; prov:used ?out .
          ?out tp:sha256 ?sha .
          OPTIONAL {{ ?v tp:failedExpectation ?failed }}
          OPTIONAL {{ ?v tp:validationError ?error }} }} }}""")


def test_fail_policy_stops_consumers_and_publishes_the_failure(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path
) -> None:
    outcome, rec = _run(workflows_dir, "checked_fail", "fail", 99)
    assert outcome.state == "failed"
    (v,) = _verdicts(rec.publication["graph"])
    assert v["verdict"] == "failed"
    assert v["failed"] == "expect_column_values_to_be_between(x)"
    tasks = {
        r["t"]
        for r in _select(f"""
        PREFIX tp: <urn:twinprov:vocab#>
        SELECT ?t WHERE {{ GRAPH <{rec.publication["graph"]}> {{ ?a tp:taskId ?t }} }}""")
    }
    assert "consume" not in tasks  # downstream of the failed check: never ran
    report = Path(rec.publication["validation_report"])
    assert "expect_column_values_to_be_between" in report.read_text()


def test_warn_policy_keeps_the_run_going(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path
) -> None:
    outcome, rec = _run(workflows_dir, "checked_warn", "warn", 99)
    assert outcome.state == "success"
    (v,) = _verdicts(rec.publication["graph"])
    assert v["verdict"] == "failed"  # recorded, but the run went on
    tasks = {
        r["t"]
        for r in _select(f"""
        PREFIX tp: <urn:twinprov:vocab#>
        SELECT ?t WHERE {{ GRAPH <{rec.publication["graph"]}> {{ ?a tp:taskId ?t }} }}""")
    }
    assert "consume" in tasks


def test_output_changed_after_production_is_caught_by_checksum(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path
) -> None:
    outcome, rec = _run(workflows_dir, "checked_tamper", "fail", 3, tamper=True)
    assert outcome.state == "failed"
    (v,) = _verdicts(rec.publication["graph"])
    assert v["verdict"] == "failed"
    assert "output changed after it was produced" in v["error"]


def test_demo_with_nan_fault_fails_validation_and_exits_non_zero(
    airflow_db: None, twinprov_home: Path
) -> None:
    env = dict(os.environ)
    env.pop("TWINPROV_WORKFLOWS_DIR", None)
    proc = subprocess.run(
        [*TP, "run", "drought_early_warning", "-p", "fault=nan", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    by_output = {v["output"]: v for v in summary["validations"]}
    assert by_output["spi"]["success"] is False
    assert by_output["spi"]["failed_expectations"] == ["expect_column_values_to_not_be_null(spi)"]
    assert by_output["precipitation"]["success"] is True
    ran = {s["task_id"] for s in summary["steps"]}
    assert "classify_hazard" not in ran and "forecast_spi" not in ran
    spi_sha = next(
        o["sha256"] for s in summary["steps"] for o in s["outputs"] if o["name"] == "spi"
    )
    rows = _verdicts(summary["graph"])
    assert {
        "verdict": "failed",
        "failed": "expect_column_values_to_not_be_null(spi)",
        "sha": spi_sha,
    } in rows
