"""Reruns that explain themselves, through real Airflow (``dag.test()``): what changed around
each step (packages, programs), the likely cause of the first divergence, graded outputs; in
the verdict, ``verdict.json``, the crate, PROV (SPARQL) and ``twinprov show``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twinprov.provenance import environment
from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger
from twinprov.provenance.record import Verdict
from twinprov.provenance.store import EmbeddedStore

SPEC = """
name: explain_wf
steps:
  - id: make
    command: [python, "${workflow_dir}/make.py"]
    outputs:
      - {name: grid, path: grid.nc, media_type: application/x-netcdf}
  - id: stats
    command: [python, "${workflow_dir}/stats.py", "${inputs.grid}"]
    inputs: [{name: grid, from: make.grid}]
    outputs:
      - {name: table, path: stats.csv, media_type: text/csv}
"""

MAKE = """
import numpy as np
import xarray as xr
values = np.linspace(0.0, 1.0, 12).reshape(3, 4)
xr.Dataset({"v": (("lat", "lon"), values)},
           coords={"lat": [45.0, 46.0, 47.0], "lon": [6.0, 7.0, 8.0, 9.0]}).to_netcdf("grid.nc")
"""

# the statistic depends on the version of a package installed in the environment
STATS = """
import sys
from importlib import metadata
import xarray as xr
scale = float(metadata.version("twinprov-probe").split(".")[1] or 0) + 1.0
with xr.open_dataset(sys.argv[1]) as ds:
    lat_mean = ds["v"].mean("lon").values
with open("stats.csv", "w") as f:
    f.write("lat,mean\\n")
    for lat, m in zip([45, 46, 47], lat_mean):
        f.write(f"{lat},{m * scale:.6f}\\n")
"""


def _install_probe(site: Path, version: str) -> None:
    """A distribution ``twinprov-probe`` of ``version`` in ``site`` (replacing any other)."""
    for old in site.glob("twinprov_probe-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    dist = site / f"twinprov_probe-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: twinprov-probe\nVersion: {version}\n"
    )


def _select(sparql: str) -> list[dict[str, str]]:
    with EmbeddedStore(Settings.load().store_path).open() as store:
        res = store.query(sparql)
        names = [v.value for v in res.variables]
        return [{n: sol[n].value for n in names if sol[n] is not None} for sol in res]


@pytest.fixture
def probe_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site folder on ``sys.path`` (the task process) and ``PYTHONPATH`` (the steps)."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv(environment.CACHE_ENV, str(tmp_path / "env-cache"))
    monkeypatch.setattr(environment, "_memo", {})
    return site


def test_changed_package_is_named_on_the_first_divergent_step(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path, probe_site: Path
) -> None:
    from twinprov.dags.runner import run_workflow

    spec = workflows_dir / "explain.yaml"
    spec.write_text(SPEC)
    (workflows_dir / "make.py").write_text(MAKE)
    (workflows_dir / "stats.py").write_text(STATS)
    ledger = Ledger(Settings.load().ledger_url)

    _install_probe(probe_site, "1.0")
    original = run_workflow(str(spec), {})
    assert original.state == "success"
    crate = Path(str(ledger.run("explain_wf", original.run_id).publication["crate"]))
    recorded = json.loads((crate / "reproducibility" / "environment.json").read_text())
    by_step = {e["step"]: e["facts"] for e in recorded.values()}
    assert by_step["stats"]["packages"]["twinprov-probe"] == "1.0"
    assert set(by_step["stats"]["programs"]) == {"stats.py"}

    _install_probe(probe_site, "1.1")  # one package version changed
    again = run_workflow(str(spec), {"rerun_of": f"explain_wf/{original.run_id}"})
    rec = ledger.run("explain_wf", again.run_id)
    v = rec.verdict
    assert v is not None
    assert v.status == "differs" and v.first_divergent_step == "stats"
    assert v.likely_cause == "stats"
    cause = v.cause
    assert cause is not None and "twinprov-probe 1.0 → 1.1" in cause.changes
    # the same package changed for make too, but its output is identical: not the cause
    make = next(c for c in v.changes if c.step == "make")
    assert not make.diverged and [c.step for c in v.changes] == ["make", "stats"]
    grades = {o.output: o for o in v.outputs}
    assert grades["grid"].grade == "identical"
    table = grades["table"]
    assert table.grade == "values_differ"
    assert table.summary["max_abs_diff"] > 0 and table.summary["share_differing"] == pytest.approx(
        3 / 6
    )
    assert "same structure, different values" in table.grade_text

    # verdict.json in the rerun's crate carries it
    rerun_crate = Path(str(rec.publication["crate"]))
    on_disk = Verdict.from_dict(
        json.loads((rerun_crate / "reproducibility" / "verdict.json").read_text())
    )
    assert on_disk.likely_cause == "stats" and on_disk.cause == cause

    # PROV: which reruns differ, and what changed in their first divergent step
    rows = _select("""
        PREFIX tp: <urn:twinprov:vocab#>
        PREFIX prov: <http://www.w3.org/ns/prov#>
        SELECT ?rerun ?step ?change WHERE {
          ?v a tp:ReproducibilityVerdict ; tp:verdict "differs" ;
             tp:firstDivergentStep ?step ; tp:firstDivergenceChange ?change ;
             prov:wasGeneratedBy/prov:wasInformedBy ?rerun .
        }""")
    assert {r["step"] for r in rows} == {"stats"}
    assert "twinprov-probe 1.0 → 1.1" in {r["change"] for r in rows}
    assert again.run_id.replace(":", "%3A").replace("+", "%2B") in rows[0]["rerun"]

    # twinprov show prints what changed and the likely cause
    env = dict(os.environ)
    env.pop("TWINPROV_WORKFLOWS_DIR", None)
    shown = subprocess.run(
        [sys.executable, "-m", "twinprov.cli", "show", f"explain_wf/{again.run_id}"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "stats: twinprov-probe 1.0 → 1.1" in shown.stdout
    assert "likely cause" in shown.stdout


def test_edited_program_is_the_likely_cause(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path, probe_site: Path
) -> None:
    from twinprov.dags.runner import run_workflow

    spec = workflows_dir / "explain.yaml"
    spec.write_text(SPEC)
    (workflows_dir / "make.py").write_text(MAKE)
    (workflows_dir / "stats.py").write_text(STATS)
    _install_probe(probe_site, "1.0")
    ledger = Ledger(Settings.load().ledger_url)
    original = run_workflow(str(spec), {})
    assert original.state == "success"

    # the step program is edited between the original run and the rerun: a new variable
    edited = MAKE.replace("values)}", 'values), "w": (("lat", "lon"), values * 2)}')
    assert edited != MAKE
    (workflows_dir / "make.py").write_text(edited)
    again = run_workflow(str(spec), {"rerun_of": f"explain_wf/{original.run_id}"})
    v = ledger.run("explain_wf", again.run_id).verdict
    assert v is not None and v.status == "differs"
    assert v.first_divergent_step == "make" and v.likely_cause == "make"
    (change,) = v.changes
    assert change.step == "make" and len(change.changes) == 1
    assert change.changes[0].startswith("program make.py sha256 ")
    grades = {o.output: o for o in v.outputs}
    assert grades["grid"].grade == "structure_differs"
    assert "variables only in the rerun: w" in grades["grid"].grade_text
    # stats read other input bytes but wrote the same table: not a divergence
    assert grades["table"].grade == "identical"
