"""A CWL document becomes a DAG: one task per step, inputs as Params (defaults from the job)."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk.definitions.mappedoperator import MappedOperator

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


SCATTER = """\
cwlVersion: v1.2
class: Workflow
requirements: {ScatterFeatureRequirement: {}}
inputs:
  names: string[]
  greetings: string[]
outputs:
  out: {type: {type: array, items: {type: array, items: string}}, outputSource: greet/out}
steps:
  greet:
    run:
      class: ExpressionTool
      requirements: {InlineJavascriptRequirement: {}}
      inputs: {name: string, greeting: string}
      outputs: {out: string}
      expression: '$({"out": inputs.greeting + " " + inputs.name})'
    scatter: [name, greeting]
    scatterMethod: nested_crossproduct
    in: {name: names, greeting: greetings}
    out: [out]
"""


def test_a_scattered_step_is_a_split_then_a_mapped_task(tmp_path: Path) -> None:
    cwl = tmp_path / "greet.cwl"
    cwl.write_text(SCATTER)
    dag = build_cwl_dag(cwl)
    split, step = dag.get_task("greet__scatter"), dag.get_task("greet")
    assert isinstance(step, MappedOperator)  # dynamic task mapping over the split's output
    assert step.upstream_task_ids == {"greet__scatter"}
    assert split.upstream_task_ids == {"cwl_inputs"}
    assert step.trigger_rule == "none_failed"  # an empty scatter skips, its downstream runs


def test_scatter_plan_and_gather_are_each_others_inverse(tmp_path: Path) -> None:
    from twinprov.provenance.cwl_doc import gather_scatter, load_cwl, scatter_plan

    cwl = tmp_path / "greet.cwl"
    cwl.write_text(SCATTER)
    doc = load_cwl(cwl)
    job = {"name": ["ann", "bo", "cy"], "greeting": ["hi", "yo"]}
    plan = scatter_plan(doc, "greet", job)
    assert plan["shape"] == [3, 2] and len(plan["jobs"]) == 6
    assert plan["jobs"][1] == {"name": ["ann"], "greeting": ["yo"]}  # one-element lists
    # what cwltool returns for each element (nested: one level per scattered input)
    elements = [{"out": [[f"{j['greeting'][0]} {j['name'][0]}"]]} for j in plan["jobs"]]
    assert gather_scatter(plan, ["out"], elements) == {
        "out": [["hi ann", "yo ann"], ["hi bo", "yo bo"], ["hi cy", "yo cy"]]
    }
    empty = scatter_plan(doc, "greet", {"name": [], "greeting": ["hi"]})
    assert empty["jobs"] == [] and gather_scatter(empty, ["out"], []) == {"out": []}
    # a scattered input known only to cwltool (a default, a valueFrom): one whole element
    whole = scatter_plan(doc, "greet", {"greeting": ["hi"]})
    assert whole["whole"] and whole["jobs"] == [{"greeting": ["hi"]}]


def test_dotproduct_of_unequal_lengths_is_refused_with_the_lengths(tmp_path: Path) -> None:
    from twinprov.provenance.cwl_doc import load_cwl, scatter_plan
    from twinprov.provenance.errors import TwinprovError

    cwl = tmp_path / "greet.cwl"
    cwl.write_text(SCATTER.replace("nested_crossproduct", "dotproduct"))
    with pytest.raises(TwinprovError, match="name: 2, greeting: 1"):
        scatter_plan(load_cwl(cwl), "greet", {"name": ["a", "b"], "greeting": ["hi"]})


NESTED = REPO / "tests" / "data" / "cwl" / "nested.cwl"


def test_a_subworkflow_is_a_task_group_of_its_steps() -> None:
    dag = build_cwl_dag(NESTED)
    group = dag.task_group.children["stats"]
    assert sorted(group.children) == [
        "stats.count",
        "stats.cwl_inputs",
        "stats.cwl_outputs",
        "stats.sort",
    ]
    # the group's input object waits for the step feeding it; its steps follow the inner links
    assert dag.get_task("stats.cwl_inputs").upstream_task_ids == {"cwl_inputs", "write"}
    assert dag.get_task("stats.count").upstream_task_ids == {"stats.cwl_inputs", "stats.sort"}
    # the step after the group reads the subworkflow's output object
    assert dag.get_task("report").upstream_task_ids == {"cwl_inputs", "stats.cwl_outputs"}
    assert "stats" not in dag.task_ids  # no task runs the subworkflow whole


def _with_stats_step(tmp_path: Path, step_in: str, step_extra: str, main_extra: str) -> Path:
    text = NESTED.read_text()
    text = text.replace(
        "      in: {infile: write/out, factor: factor}\n",
        f"      in: {{infile: write/out, factor: {step_in}}}\n{step_extra}",
    )
    text = text.replace(
        "    SubworkflowFeatureRequirement: {}\n",
        "    SubworkflowFeatureRequirement: {}\n" + main_extra,
    )
    cwl = tmp_path / "nested.cwl"
    cwl.write_text(text)
    return cwl


@pytest.mark.parametrize(
    ("step_in", "step_extra", "main_extra"),
    [
        # cwltool evaluates the step's valueFrom: the group's input object would be wrong
        (
            "{source: factor, valueFrom: $(self * 2)}",
            "",
            "    StepInputExpressionRequirement: {}\n",
        ),
        # when: the step is skipped (or not) as a whole
        # (the main workflow has InlineJavascriptRequirement already)
        ("factor", "      when: $(inputs.factor > 0)\n", ""),
    ],
)
def test_a_subworkflow_runs_whole_when_a_group_would_not_be_exact(
    tmp_path: Path, step_in: str, step_extra: str, main_extra: str
) -> None:
    dag = build_cwl_dag(_with_stats_step(tmp_path, step_in, step_extra, main_extra))
    assert "stats" in dag.task_ids and "stats.sort" not in dag.task_ids
    assert dag.get_task("report").upstream_task_ids == {"cwl_inputs", "stats"}


def test_an_inline_subworkflow_is_a_task_group_too(tmp_path: Path) -> None:
    cwl = tmp_path / "inline.cwl"
    cwl.write_text(INLINE)
    dag = build_cwl_dag(cwl)
    assert {"outer.inner.hello", "outer.inner.cwl_outputs"} <= set(dag.task_ids)
    assert dag.get_task("outer.inner.hello").upstream_task_ids == {"outer.inner.cwl_inputs"}


INLINE = """\
cwlVersion: v1.2
class: Workflow
requirements: {SubworkflowFeatureRequirement: {}}
inputs: {name: string}
outputs: {out: {type: string, outputSource: outer/out}}
steps:
  outer:
    in: {name: name}
    out: [out]
    run:
      class: Workflow
      inputs: {name: string}
      outputs: {out: {type: string, outputSource: inner/out}}
      steps:
        inner:
          in: {name: name}
          out: [out]
          run:
            class: Workflow
            inputs: {name: string}
            outputs: {out: {type: string, outputSource: hello/out}}
            steps:
              hello:
                in: {name: name}
                out: [out]
                run:
                  class: ExpressionTool
                  requirements: {InlineJavascriptRequirement: {}}
                  inputs: {name: string}
                  outputs: {out: string}
                  expression: '$({"out": "hello " + inputs.name})'
"""
