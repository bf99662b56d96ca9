"""A CWL document becomes a DAG: one task per step, inputs as Params (defaults from the job)."""

from __future__ import annotations

from tests.conftest import REPO
from twinprov.dags.cwl_factory import build_cwl_dag, param_schema

CATALOG = REPO / "tests" / "data" / "cwl" / "catalog.cwl"


def test_one_task_per_step_then_publish() -> None:
    dag = build_cwl_dag(CATALOG)
    assert dag.dag_id == "cwl_catalog"
    assert set(dag.task_ids) == {"cwl_inputs", "make", "count", "publish_provenance"}
    assert dag.get_task("count").upstream_task_ids == {"cwl_inputs", "make"}
    assert "cwl" in dag.tags
    # the job file beside the document gives the trigger form's defaults
    assert dag.params["title"] == "tyrol" and dag.params["items"] == 4


def test_param_schema_follows_cwl_types() -> None:
    assert param_schema("int") == {"type": ["integer", "null"]}
    assert param_schema(["null", "string"]) == {"type": ["null", "string"]}
    assert param_schema("File") == {"type": ["null", "object"]}
    assert param_schema({"type": "array", "items": "string"}) == {"type": ["array", "null"]}
    assert param_schema({"type": "enum", "symbols": ["a"]}) == {}
