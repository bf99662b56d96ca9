"""End to end: the hand-written example DAG (``dags/examples/snow_cover_report.py``, TaskFlow +
BashOperator, ``file://`` Assets, tagged ``twinprov``) through real Airflow ``dag.test()`` in
this process, with no change to its code: PROV with the hashed outlets, a named graph, a crate
at REQUIRED level, and "which runs used X" spanning it and a spec run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from prov.model import ProvDocument

from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger
from twinprov.provenance.store import EmbeddedStore

EXAMPLE = "snow_cover_report"
USES_DEPTHS = """
name: snow_check
params:
  depths: {type: string, default: examples/snow_depths.csv}
steps:
  - id: count_days
    command:
      - python
      - -c
      - "import sys; open('n.txt','w').write(str(len(open(sys.argv[1]).readlines())))"
    args: ["${inputs.depths}"]
    inputs: [{name: depths, from: params.depths}]
    outputs: [{name: n, path: n.txt, media_type: text/plain}]
"""


def _select(sparql: str) -> list[dict[str, str]]:
    with EmbeddedStore(Settings.load().store_path).open() as store:
        res = store.query(sparql)
        names = [v.value for v in res.variables]
        return [{n: sol[n].value for n in names if sol[n] is not None} for sol in res]


@pytest.fixture
def example_run(
    airflow_db: None, twinprov_home: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    from twinprov.dags.runner import run_workflow

    monkeypatch.delenv("AIRFLOW__TWINPROV__CAPTURE", raising=False)  # the default: tagged
    outcome = run_workflow(EXAMPLE, {"station": "Davos"})
    assert outcome.state == "success"
    return outcome.dag_id, outcome.run_id


def test_example_dag_gets_prov_graph_and_crate(example_run: tuple[str, str]) -> None:
    from twinprov.app.summary import run_summary
    from twinprov.ro_crates.conformance import check_conformance

    dag_id, run_id = example_run
    settings = Settings.load()
    rec = Ledger(settings.ledger_url).run(dag_id, run_id)
    assert rec is not None and rec.state == "success" and rec.stored_digest  # in the store
    assert rec.info["dag_kind"] == "airflow" and rec.info["conf"] == {"station": "Davos"}
    dag_file = Path(rec.info["dag_file"])
    assert dag_file.name == "snow_cover_report.py"
    assert rec.info["dag_file_sha256"] == hashlib.sha256(dag_file.read_bytes()).hexdigest()
    assert not rec.publication["gaps"]
    # show: like a spec run, with the outlets hashed
    summary = run_summary(settings, rec)
    outs = {o["name"]: o for s in summary["steps"] for o in s["outputs"]}
    assert sorted(outs) == ["report_Davos.txt", "snow_depths.csv", "snow_summary.json"]  # alias too
    for o in outs.values():
        data = Path(o["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == o["sha256"] and len(data) == o["size"]
    assert json.loads(Path(outs["snow_summary.json"]["path"]).read_text())["station"] == "Davos"
    # PROV: operators, the DAG file used by the run, outputs content-addressed
    doc = ProvDocument.deserialize(source=rec.publication["files"]["prov.json"], format="json")
    provn = doc.get_provn()
    assert 'twinprov:operator="BashOperator"' in provn
    assert f'twinprov:dagFileSha256="{rec.info["dag_file_sha256"]}"' in provn
    assert '\\"extra\\": {\\"days\\": 4}' in provn  # the asset event's extra
    depths = outs["snow_depths.csv"]["sha256"]
    rows = _select(f"""
        PREFIX prov: <http://www.w3.org/ns/prov#>
        PREFIX tp: <urn:twinprov:vocab#>
        SELECT ?producer ?user WHERE {{ GRAPH <{rec.publication["graph"]}> {{
          <urn:twinprov:data/sha256-{depths}> prov:wasGeneratedBy ?p .
          ?p tp:taskId ?producer . ?u prov:used <urn:twinprov:data/sha256-{depths}> ;
          tp:taskId ?user }} }}""")
    assert rows == [{"producer": "measure_snow_depth", "user": "summarise"}]
    # every twinprov term it uses is in the vocabulary
    import rdflib

    from tests.conftest import REPO

    vocab = rdflib.Graph().parse(REPO / "provenance" / "vocab" / "twinprov.ttl")
    graph = rdflib.Graph().parse(rec.publication["files"]["prov.ttl"])
    used = {str(t) for triple in graph for t in triple if str(t).startswith("urn:twinprov:vocab#")}
    assert used <= {str(s) for s in vocab.subjects()}, used
    assert "urn:twinprov:vocab#dagFileSha256" in used and "urn:twinprov:vocab#assetEvent" in used
    # the crate: the DAG file is the workflow, tasks are steps; 0 REQUIRED issues
    crate = Path(rec.publication["crate"])
    meta = json.loads((crate / "ro-crate-metadata.json").read_text())
    by_id = {e["@id"]: e for e in meta["@graph"]}
    main = by_id["workflow/snow_cover_report.py"]
    assert main["encodingFormat"] == "text/x-python"
    assert {s["@id"] for s in main["step"]} == {"#step/measure_snow_depth", "#step/summarise"}
    report = check_conformance(crate)
    assert report.required == 0, "\n".join(report.messages("REQUIRED"))


def test_which_runs_used_x_spans_spec_and_hand_written_dags(
    example_run: tuple[str, str], workflows_dir: Path
) -> None:
    from twinprov.app.summary import RUNS_USING_QUERY
    from twinprov.dags.runner import run_workflow

    settings = Settings.load()
    depths = settings.data_dir / "examples" / "snow_depths.csv"
    sha = hashlib.sha256(depths.read_bytes()).hexdigest()
    (workflows_dir / "snow_check.yaml").write_text(USES_DEPTHS)
    spec_run = run_workflow(str(workflows_dir / "snow_check.yaml"), {})
    assert spec_run.state == "success"
    rows = _select(RUNS_USING_QUERY % {"entity": f"urn:twinprov:data/sha256-{sha}"})
    assert {(r["dag"], r["run"]) for r in rows} == {
        example_run,
        (spec_run.dag_id, spec_run.run_id),
    }


def test_cli_treats_a_hand_written_dag_run_like_a_spec_run(
    airflow_db: None, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    env = dict(os.environ, TWINPROV_HOME=str(tmp_path / "home"))
    env.pop("TWINPROV_WORKFLOWS_DIR", None)
    env.pop("AIRFLOW__TWINPROV__CAPTURE", None)

    def tp(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "twinprov.cli", *args],
            capture_output=True, text=True, env=env, check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    summary = json.loads(tp("run", EXAMPLE, "-p", "station=Arosa", "--json"))
    assert summary["state"] == "success" and summary["crate"] and not summary["gaps"]
    assert summary["params"] == {"station": "Arosa"}
    ref = f"{summary['dag_id']}/{summary['run_id']}"
    assert json.loads(tp("show", ref, "--json"))["steps"] == summary["steps"]
    assert [r["dag_id"] for r in json.loads(tp("runs", "--json"))] == [EXAMPLE]
    assert "wasGeneratedBy" in tp("export", ref, "--format", "provn")
    assert tp("crate", ref, "--check").strip() == summary["crate"]
    got = json.loads(tp("query", f"""
        PREFIX tp: <urn:twinprov:vocab#>
        SELECT ?task WHERE {{ GRAPH <{summary["graph"]}> {{ ?a a tp:TaskTry ; tp:taskId ?task }} }}
        ORDER BY ?task""", "--format", "json"))
    assert [b["task"]["value"] for b in got["results"]["bindings"]] == [
        "measure_snow_depth", "summarise"
    ]
