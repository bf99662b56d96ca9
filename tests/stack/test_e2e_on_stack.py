"""The e2e suite of the demo (tests/e2e/test_demo_run.py) against the native production stack:
the demo workflow triggered through Airflow's REST API and run by the real scheduler
(LocalExecutor), its events in the PostgreSQL ledger, its graph in the Oxigraph server, its
forecast step logging to the MLflow tracking server. The same test functions run; only the
``demo`` fixture differs (the run's summary is what ``twinprov show --json`` reports)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.test_demo_run import (
    Demo,
    Deployment,
    test_bad_input_gets_one_clear_line,
    test_clean_demo_passes_every_validation,
    test_crate_command_zips_the_crate,
    test_demo_crate_conforms_to_provenance_run_crate,
    test_demo_lineage_query_answers,
    test_every_twinprov_term_is_in_the_vocabulary,
    test_mlflow_run_found_recorded_and_tagged_back,
    test_one_activity_per_task_try,
    test_provenance_records_who_params_and_environment,
    test_run_succeeds_and_outputs_match_disk,
    test_runs_show_export_shapes,
    test_sparql_which_runs_used_an_entity,
    test_stac_items_validate_and_link_lineage,
)
from tests.stack import checks
from tests.stack.services import Stack

__all__ = [
    "test_bad_input_gets_one_clear_line",
    "test_clean_demo_passes_every_validation",
    "test_crate_command_zips_the_crate",
    "test_demo_crate_conforms_to_provenance_run_crate",
    "test_demo_lineage_query_answers",
    "test_every_twinprov_term_is_in_the_vocabulary",
    "test_mlflow_run_found_recorded_and_tagged_back",
    "test_one_activity_per_task_try",
    "test_provenance_records_who_params_and_environment",
    "test_run_succeeds_and_outputs_match_disk",
    "test_runs_show_export_shapes",
    "test_sparql_which_runs_used_an_entity",
    "test_stac_items_validate_and_link_lineage",
]

DAG = "drought_early_warning"


@pytest.fixture(scope="module")
def demo(stack: Stack) -> Iterator[Demo]:
    run_id = stack.trigger(DAG)
    states = stack.wait_runs(DAG, [run_id], timeout=900)
    assert states[run_id] == "success", states
    dep = Deployment(home=stack.twinprov_home, env=stack.env, mlflow_uri=stack.mlflow_uri)
    summary = json.loads(dep.tp("show", run_id, "--json").stdout)
    # published to the Oxigraph server, not pending
    rec = checks.run_record(stack, DAG, run_id)
    assert rec.published_digest == rec.stored_digest
    yield dep, summary


def test_demo_graph_in_the_server_is_the_published_one(stack: Stack, demo: Demo) -> None:
    _, summary = demo
    rec = checks.run_record(stack, DAG, summary["run_id"])
    triples = checks.store_triples(stack, rec.publication["graph"])
    assert triples == checks.turtle_triples(checks.published_turtle(rec).read_bytes())
    print(f"\ndemo on the stack: run graph of {len(triples)} triples in the Oxigraph server")
