"""Spec params → the DAG's Airflow Params (the UI trigger form's schema), checked by Airflow's own
Param validation: every spec constraint reaches the form, falsy ones included, and a normal run
needs no value for ``rerun_of``."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from airflow.exceptions import ParamValidationError

from tests.conftest import DEMO_SPEC
from twinprov.dags.factory import build_dag
from twinprov.provenance.errors import SpecError
from twinprov.provenance.spec import RERUN_PARAM, load_spec

FALSY = """
name: falsy_params
params:
  count: {type: integer, default: 0, minimum: 0, maximum: 0}
  ratio: {type: number, default: 0.0, minimum: 0}
  flag: {type: boolean, default: false}
  label: {type: string, default: "", description: ""}
steps:
  - id: only
    command: [python, -c, "open('o.txt', 'w').write('x')"]
    outputs: [{name: o, path: o.txt, media_type: text/plain}]
"""


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_demo_form_refuses_a_negative_seed_and_accepts_the_defaults() -> None:
    dag = build_dag(DEMO_SPEC)
    # the whole form, as Airflow checks it when a run is triggered with the defaults
    values = copy.deepcopy(dag.params).validate()
    assert values[RERUN_PARAM] is None and values["seed"] == 42
    seed = dag.params.get_param("seed")
    assert seed.schema["minimum"] == 0
    with pytest.raises(ParamValidationError):
        seed.resolve(-1)
    assert seed.resolve(0) == 0


def test_rerun_of_is_optional_and_still_takes_a_run(tmp_path: Path) -> None:
    dag = build_dag(DEMO_SPEC)
    rerun = dag.params.get_param(RERUN_PARAM)
    assert "null" in rerun.schema["type"]
    assert rerun.resolve(None) is None
    assert rerun.resolve("drought_early_warning/manual__1") == "drought_early_warning/manual__1"
    with pytest.raises(ParamValidationError):
        rerun.resolve(7)


def test_falsy_constraints_and_defaults_reach_the_schema(tmp_path: Path) -> None:
    dag = build_dag(_spec(tmp_path, FALSY))
    count = dag.params.get_param("count")
    assert (count.schema["minimum"], count.schema["maximum"]) == (0, 0)
    assert count.resolve(0) == 0
    for bad in (-1, 1):
        with pytest.raises(ParamValidationError):
            count.resolve(bad)
    with pytest.raises(ParamValidationError):
        dag.params.get_param("ratio").resolve(-0.5)
    assert dag.params.get_param("flag").resolve(False) is False
    assert dag.params.get_param("label").resolve("") == ""
    copy.deepcopy(dag.params).validate()


def test_empty_enum_is_a_spec_error(tmp_path: Path) -> None:
    path = _spec(tmp_path, FALSY.replace("type: boolean, default: false", "type: string, "
                                         "default: a, enum: []"))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert any(i.path == "params.flag.enum" and "empty" in i.message for i in err.value.issues)
