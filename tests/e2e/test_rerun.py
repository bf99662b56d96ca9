"""Reruns through real Airflow (``dag.test()``): verdicts, first divergence, tolerance rules,
crates moved to another TWINPROV_HOME, scheduled reproducibility DAGs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger
from twinprov.provenance.store import EmbeddedStore

TP = [sys.executable, "-m", "twinprov.cli"]


def _tp(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TWINPROV_HOME=str(home))
    env.pop("TWINPROV_WORKFLOWS_DIR", None)
    return subprocess.run([*TP, *args], capture_output=True, text=True, env=env, check=False)


def _select(sparql: str) -> list[dict[str, str]]:
    with EmbeddedStore(Settings.load().store_path).open() as store:
        res = store.query(sparql)
        names = [v.value for v in res.variables]
        return [{n: sol[n].value for n in names if sol[n] is not None} for sol in res]


NOISY = """
name: noisy_wf
reproducibility: {{schedule: "@weekly"}}
params:
  noise: {{type: number, default: 0.0, minimum: 0}}
steps:
  - id: make
    command: [python, "${{workflow_dir}}/make.py", "${{params.noise}}"]
    outputs:
      - name: grid
        path: grid.nc
        media_type: application/x-netcdf
        {compare}
"""

MAKE = """
import sys
import numpy as np
import xarray as xr
noise = float(sys.argv[1])
values = np.linspace(0.0, 1.0, 12).reshape(3, 4)
if noise:
    values = values + np.random.default_rng().normal(0.0, noise, values.shape)  # unseeded
xr.Dataset({"v": (("lat", "lon"), values)},
           coords={"lat": [45.0, 46.0, 47.0], "lon": [6.0, 7.0, 8.0, 9.0]}).to_netcdf("grid.nc")
"""


def _noisy(folder: Path, compare: str = "") -> Path:
    spec = folder / "noisy.yaml"
    spec.write_text(NOISY.format(compare=compare))
    (folder / "make.py").write_text(MAKE)
    return spec


def grid_sha(verdict: dict[str, Any]) -> str:
    return str(verdict["outputs"][0]["rerun_sha256"])


def test_tolerance_rule_decides_between_tiny_and_large_differences(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path
) -> None:
    from twinprov.dags.runner import run_workflow

    spec = _noisy(workflows_dir, "compare: {rtol: 0.0, atol: 0.001}")
    ledger = Ledger(Settings.load().ledger_url)
    tiny = run_workflow(str(spec), {"noise": 1e-6})
    again = run_workflow(str(spec), {"rerun_of": f"noisy_wf/{tiny.run_id}"})
    v = ledger.run("noisy_wf", again.run_id).publication["verdict"]
    assert v["status"] == "reproduced"
    (grid,) = v["outputs"]
    assert grid["status"] == "equal_within_tolerance"
    assert grid["rule"] == "equal within rtol=0, atol=0.001"
    assert grid["original_sha256"] != grid["rerun_sha256"]

    large = run_workflow(str(spec), {"noise": 0.5})
    again = run_workflow(str(spec), {"rerun_of": f"noisy_wf/{large.run_id}"})
    v = ledger.run("noisy_wf", again.run_id).publication["verdict"]
    assert v["status"] == "differs" and v["first_divergent_step"] == "make"
    assert v["outputs"][0]["rule"] == "not equal within rtol=0, atol=0.001"
    # the rerun used the original's params (noise=0.5), not the DAG's defaults
    assert ledger.run("noisy_wf", again.run_id).info["params"]["noise"] == 0.5
    # the verdict is attached to the output's Airflow Asset, as an asset event of the rerun
    from tests.e2e.conftest import asset_events
    from twinprov.provenance.assets import output_uri

    (event,) = [
        e
        for e in asset_events(again.run_id)[output_uri("noisy_wf", "make", "grid")]
        if e.get("kind") == "reproducibility"
    ]
    assert event["verdict"] == "differs" and event["status"] == "differs"
    assert event["sha256"] == grid_sha(v) and event["original_run"] == v["original_run"]
    assert event["run"] == ledger.run("noisy_wf", again.run_id).publication["graph"]


def test_scheduled_reproducibility_dag_records_a_verdict(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path
) -> None:
    from twinprov.dags.factory import workflow_dags
    from twinprov.dags.runner import run_workflow

    spec = _noisy(workflows_dir)
    dags = workflow_dags(workflows_dir)
    assert "noisy_wf__reproduce" in dags
    assert dags["noisy_wf__reproduce"].schedule == "@weekly"
    assert dags["noisy_wf__reproduce"].params["rerun_of"] == "latest"

    base = run_workflow(str(spec), {"noise": 0.0})
    assert base.state == "success"
    ok = run_workflow(str(spec), {}, reproduce=True)
    assert ok.state == "success"
    ledger = Ledger(Settings.load().ledger_url)
    assert ledger.run("noisy_wf__reproduce", ok.run_id).publication["verdict"]["status"] == (
        "reproduced"
    )
    noisy = run_workflow(str(spec), {"noise": 0.1})  # now the latest successful run is noisy
    failed = run_workflow(str(spec), {}, reproduce=True)
    assert failed.state == "failed"  # a failed reproduction fails the DAG run visibly
    v = ledger.run("noisy_wf__reproduce", failed.run_id).publication["verdict"]
    from urllib.parse import unquote

    assert v["status"] == "differs" and unquote(v["original_run"]).endswith(noisy.run_id)


def test_demo_reruns_identically_and_the_verdict_is_queryable(
    airflow_db: None, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    first = _tp(home, "run", "drought_early_warning", "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    original = json.loads(first.stdout)
    proc = _tp(home, "rerun", original["run_id"], "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdict = json.loads(proc.stdout)
    assert verdict["status"] == "reproduced" and verdict["exit_code"] == 0
    assert {o["status"] for o in verdict["outputs"]} == {"identical"}
    assert len(verdict["outputs"]) == 5

    os.environ["TWINPROV_HOME"] = str(home)  # query this home's store in-process
    try:
        rows = _select("""
            PREFIX tp: <urn:twinprov:vocab#>
            PREFIX prov: <http://www.w3.org/ns/prov#>
            SELECT ?rerun ?original ?verdict WHERE {
              ?v a tp:ReproducibilityVerdict ; tp:verdict ?verdict ; tp:reproduces ?original ;
                 prov:wasGeneratedBy/prov:wasInformedBy ?rerun .
            }""")
        # OpenLineage: the rerun's DAG run carries the verdict, its outputs the same versions
        from tests.e2e.test_openlineage import parse_event
        from twinprov.app.lineage import run_events_ndjson
        from twinprov.app.summary import find_run

        settings = Settings.load()
        rerun = find_run(Ledger(settings.ledger_url), verdict["run"])
        lines = run_events_ndjson(settings, rerun.dag_id, rerun.run_id).splitlines()
        last = parse_event(lines[-1])
        facet = last.run.facets["twinprov"]
        assert (last.job.name, facet.reproducibility) == (rerun.dag_id, "reproduced")
        assert facet.originalRun == verdict["original_run"]
        assert {o.facets["version"].datasetVersion for o in last.outputs} == {
            o["sha256"] for s in original["steps"] for o in s["outputs"]
        }
    finally:
        os.environ.pop("TWINPROV_HOME")
    assert [r["verdict"] for r in rows] == ["reproduced"]
    assert rows[0]["original"].endswith(original["run_id"].replace(":", "%3A").replace("+", "%2B"))

    # the rerun's crate carries the verdict
    shown = json.loads(_tp(home, "show", verdict["run"], "--json").stdout)
    crate = Path(shown["crate"])
    assert json.loads((crate / "reproducibility" / "verdict.json").read_text())["status"] == (
        "reproduced"
    )

    # the original crate, copied to another TWINPROV_HOME, reruns there from the crate alone
    elsewhere = tmp_path / "elsewhere"
    moved = tmp_path / "mailed-crate"
    shutil.copytree(Path(original["crate"]), moved)
    proc = _tp(elsewhere, "rerun", str(moved), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["status"] == "reproduced"


def test_nondeterministic_step_is_named_as_first_divergence(
    airflow_db: None, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    first = _tp(home, "run", "drought_early_warning", "-p", "fault=nondeterministic", "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    run_id = json.loads(first.stdout)["run_id"]
    proc = _tp(home, "rerun", run_id, "--json")
    assert proc.returncode == 1, proc.stderr[-2000:]
    verdict = json.loads(proc.stdout)
    assert verdict["status"] == "differs"
    assert verdict["first_divergent_step"] == "classify_hazard"
    differing = {o["output"] for o in verdict["outputs"] if o["status"] == "differs"}
    assert differing == {"hazard_map", "summary"}


def test_bad_crates_get_clear_errors(airflow_db: None, tmp_path: Path) -> None:
    home = tmp_path / "home"
    not_a_crate = tmp_path / "empty"
    not_a_crate.mkdir()
    proc = _tp(home, "rerun", str(not_a_crate))
    assert proc.returncode == 2 and "no recorded run" in proc.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "ro-crate-metadata.json").write_text(
        json.dumps(
            {
                "@context": "https://w3id.org/ro/crate/1.1/context",
                "@graph": [
                    {
                        "@id": "ro-crate-metadata.json",
                        "@type": "CreativeWork",
                        "about": {"@id": "./"},
                        "conformsTo": {"@id": "https://w3id.org/ro/crate/1.1"},
                    },
                    {"@id": "./", "@type": "Dataset", "name": "x", "hasPart": []},
                ],
            }
        )
    )
    proc = _tp(home, "rerun", str(foreign))
    assert proc.returncode == 2
    assert "is not a Provenance Run Crate" in proc.stderr


TINY = """
name: tiny_wf
steps:
  - id: only
    command: [python, -c, "open('t.txt', 'w').write('tiny')"]
    outputs: [{name: t, path: t.txt, media_type: text/plain}]
"""


def test_altered_spec_in_a_crate_is_refused(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path, tmp_path: Path
) -> None:
    from twinprov.app.rerun import RerunError, read_crate
    from twinprov.dags.runner import run_workflow

    (workflows_dir / "tiny.yaml").write_text(TINY)
    run = run_workflow(str(workflows_dir / "tiny.yaml"), {})
    rec = Ledger(Settings.load().ledger_url).run("tiny_wf", run.run_id)
    assert rec is not None
    crate = tmp_path / "crate"
    shutil.copytree(Path(rec.publication["crate"]), crate)
    read_crate(crate)  # as published: accepted
    spec = next((crate / "workflow").glob("*.yaml"))
    spec.write_text(spec.read_text() + "\n# edited\n")
    with pytest.raises(RerunError, match="does not match its recorded sha256"):
        read_crate(crate)


def test_tolerance_comparison_on_real_netcdf(tmp_path: Path) -> None:
    from twinprov.app.compare import _numeric_equal

    a, b, c = tmp_path / "a.nc", tmp_path / "b.nc", tmp_path / "c.nc"
    values = np.arange(12.0).reshape(3, 4)
    for path, delta in ((a, 0.0), (b, 1e-9), (c, 1e-2)):
        xr.Dataset({"v": (("y", "x"), values + delta)}).to_netcdf(path)
    assert _numeric_equal(a, b, "application/x-netcdf", 0.0, 1e-6) is True
    assert _numeric_equal(a, c, "application/x-netcdf", 0.0, 1e-6) is False
    assert _numeric_equal(a, b, "image/png", 0.0, 1e-6) is None


OBS = """
name: obs_wf
params:
  observations: {type: string, default: obs.csv, description: station data (data folder)}
steps:
  - id: mean
    command: [python, -c, "import sys; v=[float(x) for x in open(sys.argv[1]).read().split()];
              open('mean.txt','w').write(str(sum(v)/len(v)))", "${inputs.obs}"]
    inputs: [{name: obs, from: params.observations}]
    outputs: [{name: mean, path: mean.txt, media_type: text/plain}]
"""


def test_changed_input_is_inputs_changed_not_a_failure(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path
) -> None:
    from twinprov.app.rerun import changed_inputs, read_crate
    from twinprov.dags.runner import run_workflow

    data = Settings.load().data_dir
    data.mkdir(parents=True)
    (data / "obs.csv").write_text("1 2 3\n")
    (workflows_dir / "obs.yaml").write_text(OBS)
    first = run_workflow(str(workflows_dir / "obs.yaml"), {})
    assert first.state == "success"
    rec = Ledger(Settings.load().ledger_url).run("obs_wf", first.run_id)
    original = read_crate(Path(rec.publication["crate"]))
    assert changed_inputs(Settings.load(), original) == []
    (data / "obs.csv").write_text("1 2 4\n")  # the station data were revised
    (changed,) = changed_inputs(Settings.load(), original)
    assert changed.startswith("mean.obs:") and "other bytes" in changed
    proc = _tp(twinprov_home, "rerun", f"obs_wf/{first.run_id}", "--json")
    assert proc.returncode == 2
    verdict = json.loads(proc.stdout)
    assert verdict["status"] == "inputs_changed"
    # triggered from the UI anyway: the publication says so too
    again = run_workflow(str(workflows_dir / "obs.yaml"), {"rerun_of": f"obs_wf/{first.run_id}"})
    v = Ledger(Settings.load().ledger_url).run("obs_wf", again.run_id).publication["verdict"]
    assert v["status"] == "inputs_changed"
