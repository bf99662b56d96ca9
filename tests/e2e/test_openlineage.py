"""OpenLineage events of real runs (``dag.test()`` in this process), sent by the publication
through the OpenLineage client's own transports (file; HTTP to a receiver on 127.0.0.1 started
here), parsed back with the client's classes; with Airflow's OpenLineage provider enabled, its
events and twinprov's share their run ids. (The demo's events: tests/e2e/test_demo_run.py; a
rerun's: tests/e2e/test_rerun.py.)"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    data_quality_assertions_dataset,
    dataset_version_dataset,
    error_message_run,
    job_type_job,
    parent_run,
    schema_dataset,
    tags_run,
)
from openlineage.client.serde import Serde

from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger
from twinprov.ro_crates.openlineage import (
    FACET_SCHEMA_FILE,
    FACET_SCHEMA_URL,
    PRODUCER,
    TwinprovRunFacet,
)

# -- parsing events back with the client's classes ----------------------------------------------


def _facet(cls: Any, d: Mapping[str, Any], **fields: Any) -> Any:
    facet = cls(**fields, producer=d["_producer"])
    assert facet._schemaURL == d["_schemaURL"]  # the class the facet claims to be
    return facet


def _dataset_facets(d: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, f in d.items():
        if key == "version":
            out[key] = _facet(
                dataset_version_dataset.DatasetVersionDatasetFacet,
                f,
                datasetVersion=f["datasetVersion"],
            )
        elif key == "schema":
            fields = [
                schema_dataset.SchemaDatasetFacetFields(
                    **{k: v for k, v in x.items() if k != "fields"}
                )
                for x in f["fields"]
            ]
            out[key] = _facet(schema_dataset.SchemaDatasetFacet, f, fields=fields)
        else:
            raise AssertionError(f"unexpected dataset facet {key}")
    return out


def _input(d: Mapping[str, Any]) -> InputDataset:
    input_facets = {}
    for key, f in (d.get("inputFacets") or {}).items():
        assert key == "dataQualityAssertions"
        A = data_quality_assertions_dataset.Assertion
        input_facets[key] = _facet(
            data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet,
            f,
            assertions=[A(**a) for a in f["assertions"]],
        )
    return InputDataset(
        namespace=d["namespace"],
        name=d["name"],
        facets=_dataset_facets(d.get("facets") or {}),
        inputFacets=input_facets,
    )


def _run_facets(d: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, f in d.items():
        if key == "twinprov":
            fields = {k: v for k, v in f.items() if not k.startswith("_")}
            out[key] = _facet(TwinprovRunFacet, f, **fields)
        elif key == "parent":
            out[key] = _facet(
                parent_run.ParentRunFacet,
                f,
                run=parent_run.Run(**f["run"]),
                job=parent_run.Job(**f["job"]),
            )
        elif key == "tags":  # the client's own (its version)
            tags = [tags_run.TagsRunFacetFields(**t) for t in f["tags"]]
            out[key] = _facet(tags_run.TagsRunFacet, f, tags=tags)
        elif key == "errorMessage":
            fields = {k: v for k, v in f.items() if not k.startswith("_")}
            out[key] = _facet(error_message_run.ErrorMessageRunFacet, f, **fields)
        else:
            raise AssertionError(f"unexpected run facet {key}")
    return out


def parse_event(line: str) -> RunEvent:
    """One NDJSON line as the client's :class:`RunEvent` (its validators check the run id, the
    times, the URLs); the event serializes back to the same JSON."""
    d = json.loads(line)
    jt = d["job"]["facets"]["jobType"]
    event = RunEvent(
        eventType=RunState(d["eventType"]),
        eventTime=d["eventTime"],
        run=Run(runId=d["run"]["runId"], facets=_run_facets(d["run"]["facets"])),
        job=Job(
            namespace=d["job"]["namespace"],
            name=d["job"]["name"],
            facets={
                "jobType": _facet(
                    job_type_job.JobTypeJobFacet,
                    jt,
                    **{k: v for k, v in jt.items() if not k.startswith("_")},
                )
            },
        ),
        inputs=[_input(i) for i in d["inputs"]],
        outputs=[
            OutputDataset(
                namespace=o["namespace"],
                name=o["name"],
                facets=_dataset_facets(o.get("facets") or {}),
            )
            for o in d["outputs"]
        ],
        producer=d["producer"],
    )
    assert json.loads(Serde.to_json(event)) == d
    return event


def read_events(path: Path, producer: str = PRODUCER) -> list[dict[str, Any]]:
    """The events of one producer in an NDJSON file, as dicts (twinprov's parsed back first)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and json.loads(line)["producer"] == producer:
            if producer == PRODUCER:
                parse_event(line)
            out.append(json.loads(line))
    return out


# -- tests ---------------------------------------------------------------------------------------


def test_facet_schema_is_shipped_and_names_every_field() -> None:
    schema = json.loads(FACET_SCHEMA_FILE.read_text(encoding="utf-8"))
    assert FACET_SCHEMA_URL.startswith(schema["$id"] + "#")
    props = schema["$defs"]["TwinprovRunFacet"]["allOf"][1]["properties"]
    fields = {a.name for a in TwinprovRunFacet.__attrs_attrs__ if not a.name.startswith("_")}
    assert set(props) == fields


@pytest.mark.parametrize(
    ("location", "host", "expected"),
    [
        ("/data/a.csv", "node1", ("file://node1", "/data/a.csv")),
        ("/data/a.csv", None, ("file", "/data/a.csv")),
        ("file://hpc/scratch/x.nc", "node1", ("file://hpc", "/scratch/x.nc")),
        ("s3://bucket/runs/x.nc", None, ("s3://bucket", "runs/x.nc")),
        ("gs://b/k/x.zarr", None, ("gs://b", "k/x.zarr")),
        ("hdfs://nn:8020/d/x.parquet", None, ("hdfs://nn:8020", "/d/x.parquet")),
    ],
)
def test_dataset_names_follow_openlineage_naming(
    location: str, host: str | None, expected: tuple[str, str]
) -> None:
    from twinprov.ro_crates.openlineage import dataset_naming

    assert dataset_naming(location, host) == expected


@pytest.fixture
def lineage_file(
    tmp_path: Path, twinprov_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Twinprov's emission on; OpenLineage's file transport (twinprov's events and, as it reads
    the same variables, Airflow's provider's) appending to one NDJSON file."""
    path = tmp_path / "lineage.ndjson"
    monkeypatch.setenv("AIRFLOW__TWINPROV__OPENLINEAGE", "on")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(path))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    yield path


def test_hand_written_dag_events_share_the_providers_run_ids(
    airflow_db: None, lineage_file: Path
) -> None:
    """The run goes through ``twinprov run`` in a process of its own: Airflow loads plugins once
    per process, and the provider's plugin registers its listener only if OpenLineage is
    configured at that moment (in a test process, an earlier test has loaded them without it)."""
    proc = subprocess.run(
        [sys.executable, "-m", "twinprov.cli", "run", "snow_cover_report", "-p", "station=Davos"]
        + ["--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary_json = json.loads(proc.stdout)
    assert summary_json["state"] == "success"
    run = {"dag_id": summary_json["dag_id"], "run_id": summary_json["run_id"]}
    ours = read_events(lineage_file)

    theirs = [  # the process has ended: everything the provider sent is in the file
        e
        for e in map(json.loads, lineage_file.read_text().splitlines())
        if e["producer"] != PRODUCER
    ]
    # the DAG run: the provider's event (its DAG-run listener) and ours are on the same run
    dag_runs = {e["run"]["runId"] for e in ours if e["job"]["name"] == run["dag_id"]}
    assert dag_runs == {e["run"]["runId"] for e in theirs if e["job"]["name"] == run["dag_id"]}
    # each task try: the id the provider's own function gives it, from Airflow's metadata DB
    # (under dag.test() in a test process, the provider sends task events from a forked process
    # that does not get through Airflow's test log setup, so they are computed, not read)
    from airflow.models import DagRun, TaskInstance
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter
    from airflow.utils.session import create_session

    with create_session() as session:
        dr = session.query(DagRun).filter_by(dag_id=run["dag_id"], run_id=run["run_id"]).one()
        date = dr.logical_date or dr.run_after
        expected = {
            (
                f"{ti.dag_id}.{ti.task_id}",
                OpenLineageAdapter.build_task_instance_run_id(
                    dag_id=ti.dag_id,
                    task_id=ti.task_id,
                    try_number=ti.try_number,
                    logical_date=date,
                    map_index=ti.map_index,
                ),
            )
            for ti in session.query(TaskInstance).filter_by(
                dag_id=run["dag_id"], run_id=run["run_id"]
            )
        }
        assert dag_runs == {
            OpenLineageAdapter.build_dag_run_id(
                dag_id=dr.dag_id, logical_date=date, clear_number=dr.clear_number
            )
        }
    tasks = {(e["job"]["name"], e["run"]["runId"]) for e in ours} - {
        (run["dag_id"], r) for r in dag_runs
    }
    assert len(tasks) == 2 and tasks == expected
    parents = {
        e["run"]["facets"]["parent"]["run"]["runId"]
        for e in ours
        if e["job"]["name"] != run["dag_id"]
    }
    assert parents == dag_runs
    # the outlets, versioned by their sha256, named by where they are
    settings = Settings.load()
    rec = Ledger(settings.ledger_url).run(run["dag_id"], run["run_id"])
    assert rec is not None and "openlineage" not in rec.publication["gaps"]
    assert rec.publication["openlineage"] == {"events": len(ours), "transport": "file"}
    end = [e for e in ours if e["job"]["name"] == run["dag_id"] and e["eventType"] == "COMPLETE"]
    outputs = {o["name"]: o for o in end[0]["outputs"]}
    summary = next(n for n in outputs if n.endswith("snow_summary.json"))
    sha = hashlib.sha256(Path(summary).read_bytes()).hexdigest()
    assert outputs[summary]["facets"]["version"]["datasetVersion"] == sha
    assert outputs[summary]["namespace"] == f"file://{socket.gethostname()}"
    twinprov = end[0]["run"]["facets"]["twinprov"]
    assert twinprov["provRun"] == rec.publication["graph"]
    assert twinprov["crate"] == rec.publication["crate"]


class _Receiver(BaseHTTPRequestHandler):
    """An OpenLineage HTTP endpoint: records each event POSTed to /api/v1/lineage."""

    got: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append({"path": self.path, "event": json.loads(body)})
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_failed_run_over_http_and_a_gap_retried_by_publish(
    airflow_db: None,
    workflows_dir: Path,
    twinprov_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.e2e.test_failures import FAILING
    from twinprov.app.publish import publish_pending
    from twinprov.dags.runner import run_workflow

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    port = server.server_address[1]
    server.server_close()  # nothing listens there yet: the first publication cannot send
    monkeypatch.setenv("AIRFLOW__TWINPROV__OPENLINEAGE", "on")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__RETRY__TOTAL", "0")
    spec = workflows_dir / "failing.yaml"
    spec.write_text(FAILING)
    outcome = run_workflow(str(spec), {})
    assert outcome.state == "failed"
    settings = Settings.load()
    rec = Ledger(settings.ledger_url).run(outcome.dag_id, outcome.run_id)
    assert rec is not None and "openlineage" in rec.publication["gaps"]
    assert "http" in rec.publication["gaps"]["openlineage"]

    _Receiver.got = []
    server = ThreadingHTTPServer(("127.0.0.1", port), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        pubs = publish_pending(settings)
    finally:
        server.shutdown()
        server.server_close()
    assert [p.run_id for p in pubs] == [outcome.run_id] and not pubs[0].gaps
    lines = [json.dumps(g["event"]) for g in _Receiver.got if g["event"]["producer"] == PRODUCER]
    assert {g["path"] for g in _Receiver.got} == {"/api/v1/lineage"}
    events = [parse_event(line) for line in lines]
    ends = {
        (e.job.name.split(".")[-1], e.eventType.value)
        for e in events
        if e.eventType != RunState.START
    }
    assert ("first", "COMPLETE") in ends and ("second", "FAIL") in ends
    assert (outcome.dag_id, "FAIL") in ends
    fail = next(
        e for e in events if e.job.name.endswith(".second") and e.eventType == RunState.FAIL
    )
    assert (
        "exit" in fail.run.facets["errorMessage"].message.lower()
        or fail.run.facets["errorMessage"].message
    )
    # the input of the failed step is the first step's output, same version on both sides
    first_out = next(
        e for e in events if e.job.name.endswith(".first") and e.eventType == RunState.COMPLETE
    ).outputs[0]
    assert [(i.name, i.facets["version"].datasetVersion) for i in fail.inputs] == [
        (first_out.name, first_out.facets["version"].datasetVersion)
    ]
    fresh = Ledger(settings.ledger_url).run(outcome.dag_id, outcome.run_id)
    assert fresh is not None and "openlineage" not in fresh.publication["gaps"]
    assert publish_pending(settings) == []  # nothing left to resend
