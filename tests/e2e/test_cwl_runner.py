"""`twinprov cwl-runner`: a CWL workflow through Airflow, like cwl-runner, with provenance; and a
few tests of the CWL v1.2 conformance suite through cwltest (the whole suite: make conformance)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

TWINPROV = str(Path(sys.executable).with_name("twinprov"))
CATALOG = REPO / "tests" / "data" / "cwl" / "catalog.cwl"
CONFORMANCE = Path(os.environ.get("CWL_TESTS", REPO.parent / "shared" / "cwl-v1.2-conformance"))


def _run(args: list[str], home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # its own Airflow DB, as in test_cwl_errors: with the session's DB shared, cwl-runner
    # processes left it unreadable ("disk I/O error") for the tests after them
    env = {**os.environ, "TWINPROV_HOME": str(home), "AIRFLOW_HOME": f"{home}-airflow"}
    return subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False
    )


def test_cwl_workflow_runs_with_provenance(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    proc = _run(
        [
            TWINPROV,
            "cwl-runner",
            "--outdir",
            str(out),
            "--quiet",
            str(CATALOG),
            str(CATALOG.with_name("catalog.job.yml")),
        ],
        home,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # stdout is the output object, nothing else
    assert result["lines"] == 4
    assert result["catalog"]["class"] == "Directory"
    assert sorted(p.name for p in (out / "catalog").iterdir()) == [
        f"item{i}.txt" for i in range(1, 5)
    ]
    show = json.loads(_run([TWINPROV, "show", "latest", "--json"], home, tmp_path).stdout)
    assert show["state"] == "success"
    make = next(s for s in show["steps"] if s["task_id"] == "make")
    assert make["image"] == "docker.io/library/bash:5.2"
    (catalog,) = make["outputs"]
    assert len(catalog["sha256"]) == 64  # the Directory, hashed as the manifest of its files
    turtle = _run([TWINPROV, "export", "latest", "--format", "turtle"], home, tmp_path).stdout
    assert "cwlProcess" in turtle and "CommandLineTool" in turtle
    assert f"sha256-{catalog['sha256']}" in turtle
    check = _run([TWINPROV, "crate", "latest", "--check"], home, tmp_path)
    assert check.returncode == 0, check.stderr
    assert "0 REQUIRED" in check.stderr
    meta = json.loads((Path(check.stdout.strip()) / "ro-crate-metadata.json").read_text())
    graph = {e["@id"]: e for e in meta["@graph"]}
    main = graph[graph["./"]["mainEntity"]["@id"]]
    assert main["@id"] == "workflow/catalog.cwl"
    assert graph[main["programmingLanguage"]["@id"]]["alternateName"] == "CWL"


SUBSET = ["nested_prefixes_arrays", "wf_wc_parseInt", "directory_output", "initial_workdir_expr"]


@pytest.mark.skipif(
    not (CONFORMANCE / "conformance_tests.yaml").is_file(),
    reason="the CWL v1.2 conformance tests are not here (CWL_TESTS)",
)
def test_conformance_subset(tmp_path: Path) -> None:
    """A few `required` conformance tests through cwltest (< 2 min; all: make conformance).
    (Not the suite's first test: cwltest 2.7 cannot select test 0 by name.)"""
    cwltest = str(Path(sys.executable).with_name("cwltest"))
    proc = _run(
        [
            cwltest,
            "--test",
            str(CONFORMANCE / "conformance_tests.yaml"),
            "--tool",
            TWINPROV,
            "-s",
            ",".join(SUBSET),
            "-j",
            "2",
            "--",
            "cwl-runner",
        ],
        tmp_path / "home",
        tmp_path,
    )
    assert "All tests passed" in proc.stdout + proc.stderr or proc.returncode == 0, (
        proc.stdout[-3000:] + proc.stderr[-3000:]
    )


PACKAGE = REPO / "dags" / "workflows" / "drought_hazard_package.cwl"


def _stac_catalog(root: Path) -> Path:
    """A small STAC catalog like the drought demo's: one hazard item, one other."""
    cat = root / "stac"
    for item_id in ("run1__hazard_map", "run1__spi"):
        d = cat / item_id
        d.mkdir(parents=True)
        (d / "data.nc").write_bytes(item_id.encode())
        item = {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": item_id,
            "geometry": None,
            "bbox": None,
            "properties": {"datetime": "2026-01-01T00:00:00Z"},
            "assets": {"data": {"href": "./data.nc", "type": "application/netcdf"}},
            "links": [],
        }
        (d / f"{item_id}.json").write_text(json.dumps(item))
    (cat / "catalog.json").write_text(
        json.dumps({"type": "Catalog", "id": "c", "description": "d", "links": []})
    )
    return cat


def test_application_package_answers_the_same_questions(tmp_path: Path) -> None:
    """The OGC application package: STAC Directory in, STAC Directory out; its run is in the
    graph like a spec run ("which runs used this file?"), its output catalog is linked from
    ours, and `twinprov rerun` reproduces it from its crate (the document copied at run start),
    or says which input changed."""
    home, out = tmp_path / "home", tmp_path / "out"
    job = tmp_path / "job.yml"
    stac_in = _stac_catalog(tmp_path)
    job.write_text(f"stac_catalog: {{class: Directory, path: {stac_in}}}\n")
    package = tmp_path / "pkg" / PACKAGE.name
    package.parent.mkdir()
    package.write_text(PACKAGE.read_text())
    proc = _run(
        [TWINPROV, "cwl-runner", "--outdir", str(out), str(package), str(job)], home, tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)["hazard_catalog"]
    catalog = json.loads((out / "hazard-catalog" / "catalog.json").read_text())
    assert result["class"] == "Directory" and catalog["description"] == "1 drought-hazard item(s)"
    show = json.loads(_run([TWINPROV, "show", "latest", "--json"], home, tmp_path).stdout)
    select = next(s for s in show["steps"] if s["task_id"] == "select")
    (items,) = select["outputs"]
    query = (
        "PREFIX prov: <http://www.w3.org/ns/prov#> PREFIX tp: <urn:twinprov:vocab#> "
        "SELECT ?step WHERE { ?t prov:used <urn:twinprov:data/sha256-"
        + items["sha256"]
        + "> ; tp:taskId ?step }"
    )
    answer = _run([TWINPROV, "query", query, "--format", "json"], home, tmp_path)
    steps = {b["step"]["value"] for b in json.loads(answer.stdout)["results"]["bindings"]}
    assert steps == {"publish"}
    check = _run([TWINPROV, "crate", "latest", "--check"], home, tmp_path)
    assert check.returncode == 0 and "0 REQUIRED" in check.stderr, check.stderr
    (linked,) = (home / "stac").rglob("*__catalog.json")  # the Directory output, as an Item
    item = json.loads(linked.read_text())
    related = next(link["href"] for link in item["links"] if link["rel"] == "related")
    assert json.loads(Path(related).read_text())["id"] == "drought-hazard"
    publish = next(s for s in show["steps"] if s["task_id"] == "publish")
    assert item["properties"]["twinprov:directory_sha256"] == publish["outputs"][0]["sha256"]
    # the document is edited after the run: the rerun runs the copy taken when the run started
    package.write_text(package.read_text().replace("default: hazard", "default: spi"))
    again = _run([TWINPROV, "publish", f"{show['dag_id']}/{show['run_id']}"], home, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    crate = Path(check.stdout.strip())
    assert (crate / "workflow" / PACKAGE.name).read_bytes() == PACKAGE.read_bytes()
    rerun = _run([TWINPROV, "rerun", "latest", "--json"], home, tmp_path)
    verdict = json.loads(rerun.stdout)
    assert rerun.returncode == 0 and verdict["status"] == "reproduced", rerun.stderr[-3000:]
    assert {o["output"] for o in verdict["outputs"]} == {"items", "catalog"}
    (stac_in / "run1__hazard_map" / "data.nc").write_bytes(b"other bytes")
    rerun = _run([TWINPROV, "rerun", "latest", "--json"], home, tmp_path)
    verdict = json.loads(rerun.stdout)
    assert rerun.returncode == 2 and verdict["status"] == "inputs_changed"
    assert "stac_catalog" in verdict["notes"][0]


def test_a_subworkflow_runs_as_a_task_group_with_provenance(tmp_path: Path) -> None:
    """The subworkflow step `stats` of nested.cwl runs as the task group stats.sort and
    stats.count, with the requirements it inherits: each inner step an activity with its own
    tool, the crate a CreateAction per inner step (0 REQUIRED), and a rerun reproduces it step
    by step. The step whose `when` is false is a skipped task, its output null."""
    nested = REPO / "tests" / "data" / "cwl" / "nested.cwl"
    home, out = tmp_path / "home", tmp_path / "out"
    proc = _run(
        [TWINPROV, "cwl-runner", "--outdir", str(out), "--quiet", str(nested)], home, tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    # $TWIN comes from the main workflow's EnvVarRequirement, inherited by the group's step
    assert (out / "sorted.txt").read_text() == "a\nb\nc\ndrought\n"
    assert result["lines"] == 12  # 4 lines × factor 3, through the group's output object
    assert (out / "report.txt").read_text().strip() == "4"
    show = json.loads(_run([TWINPROV, "show", "latest", "--json"], home, tmp_path).stdout)
    states = {s["task_id"]: s["state"] for s in show["steps"]}
    assert states["stats.sort"] == states["stats.count"] == "success"
    assert states["shout"] == "skipped" and result["shouted"] is None  # its `when` is false
    assert "stats" not in states  # nothing ran the subworkflow whole
    turtle = _run([TWINPROV, "export", "latest", "--format", "turtle"], home, tmp_path).stdout
    assert f"{nested.as_uri()}#sort" in turtle  # the inner step's own tool
    check = _run([TWINPROV, "crate", "latest", "--check"], home, tmp_path)
    assert check.returncode == 0 and "0 REQUIRED" in check.stderr, check.stderr
    meta = json.loads((Path(check.stdout.strip()) / "ro-crate-metadata.json").read_text())
    ids = {e["@id"] for e in meta["@graph"]}
    assert {"#try/stats.sort/1", "#try/stats.count/1", "#step/stats"} <= ids
    rerun = _run([TWINPROV, "rerun", "latest", "--json"], home, tmp_path)
    verdict = json.loads(rerun.stdout)
    assert rerun.returncode == 0 and verdict["status"] == "reproduced", rerun.stderr[-3000:]
