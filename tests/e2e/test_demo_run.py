"""End to end: the demo workflow through real Airflow (``dag.test()`` via the ``twinprov`` CLI),
real subprocess steps, the real ledger, PROV files and the embedded Oxigraph store."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prov.model import ProvDocument

from twinprov.provenance.config import DEMO_SETTINGS, demo_environment

TP = [sys.executable, "-m", "twinprov.cli"]


@dataclass(frozen=True)
class Deployment:
    """Where the demo ran and how to reach it: the embedded default here (``TWINPROV_HOME``
    only), or the native production stack (tests/stack/test_e2e_on_stack.py runs these same
    tests there: PostgreSQL ledger, Oxigraph server, MLflow server, Airflow's scheduler)."""

    home: Path
    env: Mapping[str, str]
    mlflow_uri: str

    @classmethod
    def embedded(cls, home: Path) -> Deployment:
        """The embedded default, with the demo's publication settings (as ``twinprov demo``)."""
        env = demo_environment(dict(os.environ, TWINPROV_HOME=str(home)))
        env.pop("TWINPROV_WORKFLOWS_DIR", None)
        return cls(home=home, env=env, mlflow_uri=f"sqlite:///{home / 'mlflow.db'}")

    def tp(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The ``twinprov`` command line against this deployment."""
        proc = subprocess.run(
            [*TP, *args], capture_output=True, text=True, env=dict(self.env), check=False
        )
        if check:
            assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    def query(self, sparql: str) -> dict[str, Any]:
        return dict(json.loads(self.tp("query", sparql, "--format", "json").stdout))


Demo = tuple[Deployment, dict[str, Any]]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, airflow_db: None) -> Iterator[Demo]:
    dep = Deployment.embedded(tmp_path_factory.mktemp("demo-home"))
    proc = dep.tp("run", "drought_early_warning", "--json")
    yield dep, json.loads(proc.stdout)


def test_run_succeeds_and_outputs_match_disk(demo: Demo) -> None:
    dep, summary = demo
    assert summary["state"] == "success"
    order = [s["task_id"] for s in summary["steps"]]
    assert order[:2] == ["generate_precipitation", "compute_spi"]
    assert sorted(order[2:]) == ["classify_hazard", "forecast_spi"]  # either may go first
    outputs = [o for s in summary["steps"] for o in s["outputs"]]
    assert len(outputs) == 5
    for o in outputs:
        data = Path(o["path"]).read_bytes()
        assert Path(o["path"]).is_absolute() and str(dep.home) in o["path"]
        assert hashlib.sha256(data).hexdigest() == o["sha256"] and len(data) == o["size"]


def test_one_activity_per_task_try(demo: Demo) -> None:
    dep, summary = demo
    res = dep.query(
        f"""
        PREFIX tp: <urn:twinprov:vocab#>
        SELECT ?task ?try WHERE {{ GRAPH <{summary["graph"]}> {{
          ?a a tp:TaskTry ; tp:taskId ?task ; tp:tryNumber ?try }} }}""",
    )
    got = sorted((b["task"]["value"], int(b["try"]["value"])) for b in res["results"]["bindings"])
    tries = [*summary["steps"], *summary["validations"]]
    assert got == sorted((t["task_id"], t["try_number"]) for t in tries)
    assert len(got) == 4 + 4  # four steps and four checked outputs, one try each


def test_sparql_which_runs_used_an_entity(demo: Demo) -> None:
    dep, summary = demo
    spi = next(o for s in summary["steps"] for o in s["outputs"] if o["name"] == "spi")
    res = dep.query(
        f"""
        PREFIX prov: <http://www.w3.org/ns/prov#>
        PREFIX tp: <urn:twinprov:vocab#>
        SELECT ?run ?step WHERE {{
          ?a prov:used <urn:twinprov:data/sha256-{spi["sha256"]}> ;
             prov:wasInformedBy ?r ; tp:taskId ?step .
          ?r tp:runId ?run }}""",
    )
    rows = {(b["run"]["value"], b["step"]["value"]) for b in res["results"]["bindings"]}
    users = {"classify_hazard", "forecast_spi", "validate_compute_spi_spi"}
    assert rows == {(summary["run_id"], step) for step in users}
    assert res["head"]["vars"] == ["run", "step"]  # SPARQL 1.1 Query Results JSON


def test_provenance_records_who_params_and_environment(demo: Demo) -> None:
    dep, summary = demo
    doc = ProvDocument.deserialize(source=summary["prov"]["prov.json"], format="json")
    provn = doc.get_provn()
    assert "prov:type='prov:Person'" in provn
    assert 'prov:label="seed", prov:value=42' in provn
    assert "twinprov:packagesSha256" in provn
    assert summary["params"] == {
        "seed": 42,
        "region": "alps",
        "spi_scale": 3,
        "fault": "none",
        "rerun_of": "",
    }


def test_runs_show_export_shapes(demo: Demo) -> None:
    dep, summary = demo
    runs = json.loads(dep.tp("runs", "--json").stdout)
    runs = [r for r in runs if r["dag_id"] == "drought_early_warning"]
    assert [{k: r[k] for k in ("dag_id", "run_id", "state")} for r in runs] == [
        {"dag_id": "drought_early_warning", "run_id": summary["run_id"], "state": "success"}
    ]
    shown = json.loads(dep.tp("show", summary["run_id"], "--json").stdout)
    for key in ("validations", "crate", "stac_items", "mlflow_runs", "verdict"):
        assert key in shown
    step = shown["steps"][0]
    for key in ("task_id", "state", "try_number", "target", "image", "image_digest", "outputs"):
        assert key in step
    assert step["target"] == "local" and step["image"] == "python:3.11-slim"
    turtle = dep.tp("export", summary["run_id"], "--format", "turtle").stdout
    assert "prov:wasGeneratedBy" in turtle
    provn = dep.tp("export", "latest", "--format", "provn").stdout
    assert provn.startswith("document")
    assert ProvDocument.deserialize(
        content=dep.tp("export", summary["run_id"], "--format", "provjson").stdout, format="json"
    ) == ProvDocument.deserialize(source=summary["prov"]["prov.json"], format="json")


def test_bad_input_gets_one_clear_line(demo: Demo) -> None:
    dep, _ = demo
    proc = dep.tp("run", "drought_early_warning", "-p", "fault=oops", check=False)
    assert proc.returncode == 2
    assert "fault=oops: must be one of none, nan, nondeterministic" in proc.stderr
    proc = dep.tp("run", "drought_early_warning", "-p", "seed=abc", check=False)
    assert proc.returncode == 2 and "not a valid integer" in proc.stderr
    proc = dep.tp("show", "no-such-run", check=False)
    assert proc.returncode == 2 and "no recorded run 'no-such-run'" in proc.stderr
    proc = dep.tp("query", "SELEC nothing", check=False)
    assert proc.returncode == 2 and "malformed SPARQL" in proc.stderr


def test_every_twinprov_term_is_in_the_vocabulary(demo: Demo) -> None:
    import rdflib

    from tests.conftest import REPO

    vocab = rdflib.Graph().parse(REPO / "provenance" / "vocab" / "twinprov.ttl")
    defined = {str(s) for s in vocab.subjects()}
    _, summary = demo
    graph = rdflib.Graph().parse(summary["prov"]["prov.ttl"])
    used = {str(t) for triple in graph for t in triple if str(t).startswith("urn:twinprov:vocab#")}
    assert used and used <= defined, sorted(used - defined)


def test_demo_lineage_query_answers(demo: Demo) -> None:
    from twinprov.cli import LINEAGE_QUERY

    dep, summary = demo
    res = dep.query(LINEAGE_QUERY % {"graph": summary["graph"]})
    rows = {(b["step"]["value"], b["output"]["value"]) for b in res["results"]["bindings"]}
    assert ("compute_spi", "spi") in rows and ("classify_hazard", "hazard_map") in rows


def test_mlflow_run_found_recorded_and_tagged_back(demo: Demo) -> None:
    """The forecast step's MLflow run (real MLflow: a SQLite store under TWINPROV_HOME, or the
    stack's tracking server)."""
    from mlflow import MlflowClient

    dep, summary = demo
    (m,) = summary["mlflow_runs"]
    assert m["task_id"] == "forecast_spi" and m["try_number"] == 1
    assert {"rmse", "r2", "persistence_rmse"} <= set(m["metrics"])
    assert m["models"] and m["models"][0]["uri"].startswith("models:/")
    client = MlflowClient(tracking_uri=dep.mlflow_uri)
    tags = client.get_run(m["run_id"]).data.tags
    assert tags["twinprov.run_iri"] == summary["graph"] == tags["twinprov.prov_run"]
    assert tags["twinprov.task_id"] == "forecast_spi"
    res = dep.query(
        f"""
        PREFIX prov: <http://www.w3.org/ns/prov#>
        PREFIX tp: <urn:twinprov:vocab#>
        PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
        SELECT ?step ?rmse WHERE {{
          ?ml a tp:MlflowRun ; tp:mlflowRunId "{m["run_id"]}" ; prov:wasInformedBy/tp:taskId ?step .
          ?metric prov:wasGeneratedBy ?ml ; a tp:Metric ;
                  rdfs:label "rmse" ; prov:value ?rmse }}""",
    )
    (row,) = res["results"]["bindings"]
    assert row["step"]["value"] == "forecast_spi"
    assert abs(float(row["rmse"]["value"]) - m["metrics"]["rmse"]) < 1e-9


def test_stac_items_validate_and_link_lineage(demo: Demo) -> None:
    """STAC Items of the gridded outputs, validated against pystac's bundled core schemas."""
    import pystac
    from pystac.validation import RegisteredValidator

    dep, summary = demo
    assert len(summary["stac_items"]) == 3  # precipitation, spi, hazard map (not the CSV/JSON)
    validator = RegisteredValidator.get_validator()
    by_name = {}
    for path in summary["stac_items"]:
        item = pystac.Item.from_file(path)
        d = item.to_dict()
        validator.validate_core(d, pystac.STACObjectType.ITEM, d["stac_version"], path)
        by_name[item.assets["data"].title] = item
        sha = next(
            o["sha256"]
            for s in summary["steps"]
            for o in s["outputs"]
            if o["name"] == item.assets["data"].title
        )
        assert item.assets["data"].extra_fields["file:checksum"] == "1220" + sha
        assert item.properties["processing:lineage"].count(summary["run_id"]) == 1
        assert "thumbnail" in item.assets
        assert 5 <= item.bbox[0] < item.bbox[2] <= 17  # the Alps
    derived = {link.get_href() for link in by_name["hazard_map"].get_links("derived_from")}
    assert any("__spi" in h for h in derived) and any("__precipitation" in h for h in derived)
    catalog = pystac.Catalog.from_file(str(dep.home / "stac" / "catalog.json"))
    assert catalog.get_child("drought_early_warning") is not None


def test_clean_demo_passes_every_validation(demo: Demo) -> None:
    _, summary = demo
    checked = {v["output"]: v for v in summary["validations"]}
    assert set(checked) == {"precipitation", "spi", "hazard_map", "summary"}
    for name, v in checked.items():
        assert v["success"] and not v["failed_expectations"], name
        produced = next(o for s in summary["steps"] for o in s["outputs"] if o["name"] == name)
        assert v["sha256"] == produced["sha256"]  # the verdict is about exactly these bytes
    assert Path(summary["validation_report"]).is_file()


def test_demo_crate_conforms_to_provenance_run_crate(demo: Demo) -> None:
    """rocrate-validator, offline, profile provenance-run-crate-0.5 at level ``recommended``:
    zero REQUIRED issues, and with the demo's settings zero RECOMMENDED issues but one check
    no crate checked from a local folder can pass. That check (process-run-crate-0.5_5.1) wants
    the id of every SoftwareSourceCode/ComputationalWorkflow to start with ``http``; the main
    workflow must also be a file in the crate (Workflow RO-Crate), so its id is a path that the
    validator resolves against the folder's ``file://`` URI. Tools, engine and environments get
    absolute ids under ``crate_base_uri`` and pass it."""
    from twinprov.ro_crates.conformance import check_conformance

    dep, summary = demo
    crate = Path(summary["crate"])
    assert (crate / "ro-crate-metadata.json").is_file()
    assert (crate / "ro-crate-preview.html").is_file()
    report = check_conformance(crate, level="recommended")
    assert report.skipped_checks == 0
    assert report.required == 0, report.messages("REQUIRED")
    metadata = json.loads((crate / "ro-crate-metadata.json").read_text())
    graph = {e["@id"]: e for e in metadata["@graph"]}
    main = graph["./"]["mainEntity"]["@id"]
    main_types = {f"http://schema.org/{t}" for t in graph[main]["@type"]} | {
        "https://bioschemas.org/ComputationalWorkflow"
    }
    left = [i for i in report.issues if i.severity == "RECOMMENDED"]
    assert all(i.check == "process-run-crate-0.5_5.1" for i in left), report.messages()
    assert {i.entity for i in left} <= main_types and len(left) <= 2, report.messages()
    for item in summary["stac_items"]:  # the crate names every STAC Item the run produced
        assert any(Path(item).name in i for i in graph), item
    assert any("prov.ttl" in i for i in graph) and any("prov.json" in i for i in graph)


def test_demo_crate_answers_the_competency_questions(demo: Demo) -> None:
    """The two Workflow Run Crate questions the crate used to leave open: the container build
    instructions of each step, and the configuration files that shaped the run."""
    _, summary = demo
    crate = Path(summary["crate"])
    graph = {
        e["@id"]: e for e in json.loads((crate / "ro-crate-metadata.json").read_text())["@graph"]
    }
    context = json.loads((crate / "ro-crate-metadata.json").read_text())["@context"]
    assert {"buildInstructions": "https://codemeta.github.io/terms/buildInstructions"} in context
    steps = [e for e in graph.values() if e["@type"] == "HowToStep"]
    assert len(steps) == 4
    for step in steps:
        dockerfile = step["buildInstructions"]["@id"]
        assert (crate / dockerfile).read_bytes() == (
            Path(__file__).parents[2] / "dags" / "workflows" / "drought" / "Dockerfile"
        ).read_bytes()
    run = graph["#run"]
    objects = {o["@id"] for o in run["object"]}
    main = graph["./"]["mainEntity"]["@id"]
    assert main in objects and "config/twinprov-settings.json" in objects
    shaping = json.loads((crate / "config" / "twinprov-settings.json").read_text())
    assert shaping["crate_publisher"] == DEMO_SETTINGS["crate_publisher"]
    assert "ledger_url" not in shaping  # may carry credentials
    publisher = graph[graph["./"]["publisher"]["@id"]]
    assert publisher["@type"] == "Organization" and publisher["url"].startswith("https://")


def test_crate_command_zips_the_crate(demo: Demo) -> None:
    import zipfile

    dep, summary = demo
    path = Path(dep.tp("crate", summary["run_id"], "--zip").stdout.strip())
    with zipfile.ZipFile(path) as z:
        assert "ro-crate-metadata.json" in z.namelist()
        assert any(n.startswith("prov/") for n in z.namelist())


def test_demo_openlineage_events_carry_versions_and_assertions(
    demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's events as the publication sends them, through OpenLineage's file transport,
    parsed back with the client's classes; ``twinprov lineage`` prints the same events."""
    from tests.e2e.test_openlineage import read_events
    from twinprov.app.lineage import emit_events, lineage_run
    from twinprov.app.publish import _step_events
    from twinprov.provenance.config import Settings
    from twinprov.provenance.ledger import Ledger
    from twinprov.provenance.record import collapse_tries
    from twinprov.ro_crates.openlineage import run_events

    dep, summary = demo
    path = tmp_path / "lineage.ndjson"
    monkeypatch.setenv("TWINPROV_HOME", str(dep.home))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(path))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    settings = Settings.load()
    ledger = Ledger(settings.ledger_url)
    rec = ledger.run(summary["dag_id"], summary["run_id"])
    assert rec is not None
    tries = collapse_tries(_step_events(ledger.events(rec.dag_id, rec.run_id)))
    assert emit_events(run_events(lineage_run(settings, rec, tries, rec.state or ""))) == "file"
    events = read_events(path)
    printed = [json.loads(x) for x in dep.tp("lineage", summary["run_id"]).stdout.splitlines()]
    assert [(e["eventType"], e["run"]["runId"]) for e in printed] == [
        (e["eventType"], e["run"]["runId"]) for e in events
    ]
    # START and COMPLETE for every task try and the DAG run, all with the twinprov facet
    by_job: dict[str, list[str]] = {}
    for e in events:
        by_job.setdefault(e["job"]["name"], []).append(e["eventType"])
        assert e["run"]["facets"]["twinprov"]["crate"] == summary["crate"]
    assert by_job.pop(summary["dag_id"]) == ["START", "COMPLETE"]
    assert len(by_job) == 4 + 4 and all(v == ["START", "COMPLETE"] for v in by_job.values())
    # every output, versioned by its sha256; tables and NetCDF files with their schema
    final = events[-1]
    versions = {o["name"]: o["facets"]["version"]["datasetVersion"] for o in final["outputs"]}
    outputs = [o for s in summary["steps"] for o in s["outputs"]]
    assert versions == {o["path"]: o["sha256"] for o in outputs}
    schemas = {
        o["name"].rsplit("/", 1)[-1]: [f["name"] for f in o["facets"]["schema"]["fields"]]
        for o in final["outputs"]
        if "schema" in o["facets"]
    }
    assert "spi" in schemas["spi.nc"] and "region" in schemas["region_summary.csv"]
    # each validation: the checked file, at the checksum checked, with one assertion per
    # expectation GX evaluated
    checked = {
        (i["name"], i["facets"]["version"]["datasetVersion"]): i["inputFacets"]
        for e in events
        if e["eventType"] == "COMPLETE"
        for i in e["inputs"]
        if "dataQualityAssertions" in i.get("inputFacets", {})
    }
    by_sha = {o["sha256"]: o["path"] for o in outputs}
    assert len(summary["validations"]) == len(checked) == 4
    for v in summary["validations"]:
        facet = checked[(by_sha[v["sha256"]], v["sha256"])]["dataQualityAssertions"]
        assert len(facet["assertions"]) == v["evaluated"] > 0
        assert all(a["success"] for a in facet["assertions"]) == v["success"]
